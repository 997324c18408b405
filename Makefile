# Every target sets up what it needs: on a fresh machine `make run` and `make test` are all
# it takes (Python 3.11 and make).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint format migrate migration-check image-check relay \
	nats-install bench-relay clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve on the embedded PostgreSQL (or DATABASE_URL); Ctrl-C stops both.
run: install
	$(BIN)/python -m service serve

## The whole suite (embedded PostgreSQL, or TEST_DATABASE_URL).
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check service tests loadtests fuzz clientgen docs image
	$(BIN)/ruff format --check service tests loadtests fuzz clientgen docs image
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/squawk --config .squawk.toml migrations/*.sql

format: install
	$(BIN)/ruff check --fix service tests loadtests fuzz clientgen docs image
	$(BIN)/ruff format service tests loadtests fuzz clientgen docs image

## Apply pending migrations to DATABASE_URL (or the embedded database).
## ARGS="--list" lists them, ARGS="--rollback 1" rolls the last one back.
migrate: install
	$(BIN)/python -m service migrate $(ARGS)

## The previous release keeps serving while the new migrations are applied, and beside the
## new release on the same database (tests/previous_release.py, docs/operations.md).
migration-check: install
	$(BIN)/python -m tests.previous_release

## Build the Dockerfile with podman (from Debian's packages) and run the image as a
## container: ready on /data, a restart, migrate, HEALTHCHECK, no root (docs/operations.md).
image-check: install
	$(BIN)/python image/check.py

## The relay to NATS JetStream (NATS_URL, default nats://127.0.0.1:4222) on DATABASE_URL or
## the embedded database; SIGTERM or Ctrl-C stops it after its batch in flight (docs/events.md).
relay: install
	$(BIN)/python -m service relay

## Debian's nats-server, for the relay's tests and `make bench-relay` (CI: .ci/run).
nats-install:
	@test -x /usr/sbin/nats-server || { \
		echo "nats-server not found: installing the Debian package"; \
		$(SUDO) apt-get install -y nats-server || { $(SUDO) apt-get update && $(SUDO) apt-get install -y nats-server; }; \
	}

## The relay's throughput from a backlog (RELAY_BENCH_BACKLOG events, 50,000) and its
## commit-to-subscriber delay at RELAY_BENCH_RATE writes/s (500), on a database and a
## nats-server of the bench's own.
bench-relay: install nats-install
	$(BIN)/python -m loadtests.relay_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Seeding, load tests and benchmarks (issue 3) live beside their scripts.
-include loadtests/loadtest.mk
# The Patroni cluster and the failover tests under load (issue 20).
-include tests/chaos.mk
