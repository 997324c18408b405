"""`make profile`: where the service's CPU goes, per request, by layer.

Starts the service as `make bench` does (default production configuration, one worker, on
the bench's seeded database), warms it, then drives one scenario with wrk at a fixed,
moderate load (PROFILE_CONNECTIONS callers, a closed loop) twice:
1. unobserved, reading the process's CPU time (user + system, all threads) from
   /proc/PID/stat before and after: CPU microseconds per request;
2. under py-spy (`record --format raw`, native frames included), whose collapsed stacks
   are folded into the buckets of `RULES`: each bucket's share of the samples times (1)
   is its µs per request.
Two windows, so that py-spy's pauses of the process do not count in the CPU figure.

How a sample finds its bucket. Frames from the process's start down to the event loop
(`ENTRY` rules) are dropped: every sample has them. Of the rest, walking from the leaf
towards the root:
- the innermost frame that a `WHOLE` rule names claims the sample, whatever it called
  (the request log's JSON encoding is the log's cost, a GC pause is the collector's);
- otherwise the innermost frame that an `OWN` rule names (the asyncpg call under a
  handler is asyncpg's, the handler's own lines are the handler's);
- otherwise the innermost `FALLBACK` frame (asyncio, uvloop, libuv), or the entry frame
  itself when nothing is below it: the event loop;
- otherwise "other". Frames no rule names (the C library, CPython, stdlib helpers), and
  those of `PASS` rules, pass the sample on to their caller.
Rules match a frame's file (as py-spy prints it, relative to its package root) and its
function (qualified: `Class.method`), by regular expression. Ours match by function and
class names and by module names anywhere below `service/`, so that they keep working when
modules move into sub-packages.

Environment: PROFILE_SCENARIO (mixed; a scenario of `make bench`), PROFILE_SECONDS (20)
per window, PROFILE_CONNECTIONS (8), PROFILE_RATE (py-spy samples per second, 200),
PROFILE_NATIVE (1; 0 leaves out native frames: C extensions' and the kernel calls' time
then lands on their Python caller), PROFILE_TARGET (service; `pooled` profiles it behind
PgBouncer, `floor` or `bare` a baseline instead, to compare), and the bench's SEED_SCALE,
BENCH_SEED,
BENCH_DATA_DIR, BENCH_SERVICE_PORT. Reports: loadtests/reports/profile-<time>.txt (the
table), .json (figures and rules) and .folded (py-spy's raw stacks, for flamegraph.pl).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from loadtests import bench
from service.base.settings import SettingsError

ENTRY, WHOLE, OWN, FALLBACK, PASS = "entry", "whole", "own", "fallback", "pass"


class Bucket(StrEnum):
    SERVER = "uvicorn + httptools (HTTP server)"
    LITESTAR_ROUTING = "Litestar routing, parameters, handler call"
    LITESTAR_RESPONSE = "Litestar response building"
    TOKEN_GATE = "token gate (service auth)"
    LIMITS = "request limits (service limits)"
    OBSERVER = "request observer: id, timing (service observer)"
    METRICS = "metrics (prometheus-client)"
    REQUEST_LOG = "request log (service logs)"
    DEPENDENCY = "database session: routing, pool (service sessions, database)"
    HANDLERS = "handlers, queries, validation (service)"
    JSON = "msgspec JSON"
    ASYNCPG = "asyncpg"
    GC = "garbage collector"
    EVENT_LOOP = "event loop (asyncio, uvloop)"
    OTHER = "other"


@dataclass(frozen=True)
class Rule:
    kind: str
    bucket: Bucket | None = None
    file: str | None = None
    """A regular expression searched in the frame's file; None matches any."""
    function: str | None = None
    """A regular expression searched in the frame's (qualified) function; None: any."""

    def matches(self, function: str, file: str) -> bool:
        return (self.file is None or re.search(self.file, file) is not None) and (
            self.function is None or re.search(self.function, function) is not None
        )


OURS = r"^service/"  # the service's package; any module below it
RULES: tuple[Rule, ...] = (
    # Where the event loop starts: every frame above it is the process's start-up.
    Rule(ENTRY, file=r"^asyncio/runners\.py$", function=r"^Runner\.run$"),
    Rule(ENTRY, file=r"(^|/)loop\.c$", function=r"^run_forever$"),
    # Claim all they call.
    Rule(WHOLE, Bucket.GC, file=r"(^|/)gcmodule\.c$"),
    Rule(WHOLE, Bucket.GC, file=r"libpython", function=r"^(gc_collect\w*|collect_generations)$"),
    Rule(WHOLE, Bucket.REQUEST_LOG, file=OURS, function=r"^(RequestLog|\w*Formatter|\w*Stderr)\b"),
    Rule(WHOLE, Bucket.REQUEST_LOG, file=OURS, function=r"(^|_)(write_out_logs|flushing_logs)\b"),
    Rule(WHOLE, Bucket.REQUEST_LOG, file=r"^service/(.+/)?(logs?|logging)(/|\.py)"),
    Rule(WHOLE, Bucket.REQUEST_LOG, file=r"^logging/"),
    Rule(WHOLE, Bucket.METRICS, file=r"^prometheus_client/"),
    Rule(WHOLE, Bucket.METRICS, file=OURS, function=r"^(_?\w*Metrics|sample_pool)\b"),
    Rule(WHOLE, Bucket.METRICS, file=r"^service/(.+/)?metrics(/|\.py)"),
    Rule(WHOLE, Bucket.DEPENDENCY, file=OURS, function=r"^(session_of|Session\.close)\b"),
    Rule(WHOLE, Bucket.DEPENDENCY, file=r"^service/(.+/)?pool(/|\.py)"),
    Rule(OWN, Bucket.DEPENDENCY, file=r"^service/(.+/)?routing(/|\.py)"),
    # The innermost of these decides.
    Rule(OWN, Bucket.JSON, file=r"^msgspec/", function=r"(?i)json"),
    Rule(OWN, Bucket.JSON, file=r"^litestar/serialization/", function=r"^(en|de)code_json$"),
    Rule(OWN, Bucket.DEPENDENCY, file=r"^asyncpg/pool\.py$"),
    Rule(OWN, Bucket.DEPENDENCY, file=r"^litestar/_kwargs/(dependencies|cleanup)\.py$"),
    Rule(OWN, Bucket.ASYNCPG, file=r"^asyncpg/"),
    # asyncpg's Cython modules, as native frames name their sources.
    Rule(OWN, Bucket.ASYNCPG, file=r"(^|/)(protocol|pgproto|recordobj|record)\.c$"),
    Rule(OWN, Bucket.SERVER, file=r"^(uvicorn|httptools)/"),
    Rule(OWN, Bucket.SERVER, file=r"(^|/)(parser|llhttp|api|http|url_parser)\.c$"),
    Rule(OWN, Bucket.LITESTAR_RESPONSE, file=r"^litestar/(response|serialization)/"),
    Rule(OWN, Bucket.LITESTAR_RESPONSE, file=r"^litestar/datastructures/(headers|cookie)"),
    Rule(OWN, Bucket.LITESTAR_RESPONSE, file=r"^litestar/handlers/http_handlers/_utils\.py$"),
    Rule(OWN, Bucket.LITESTAR_RESPONSE, file=r"^litestar/", function=r"\bto_response$"),
    Rule(OWN, Bucket.LITESTAR_ROUTING, file=r"^litestar/"),
    Rule(OWN, Bucket.TOKEN_GATE, file=OURS, function=r"^TokenGate\b"),
    Rule(OWN, Bucket.TOKEN_GATE, file=r"^service/(.+/)?(auth|tokens?)(/|\.py)"),
    Rule(OWN, Bucket.LIMITS, file=OURS, function=r"^(refusal|body_in_time|_Watchdog)\b"),
    Rule(OWN, Bucket.LIMITS, file=r"^service/(.+/)?limits(/|\.py)"),
    # The edge layer's own frame: the request id, the in-flight count, the response's id.
    Rule(OWN, Bucket.OBSERVER, file=OURS, function=r"^(Edge|log_request|new_request_id)\b"),
    Rule(OWN, Bucket.OBSERVER, file=r"^service/(.+/)?(observability|observer)(/|\.py)"),
    # Helpers the ASGI layers share (header lookup): their caller's cost. The layer that
    # closes sessions wraps all of Litestar: its own frame decides nothing.
    Rule(PASS, file=r"^service/(.+/)?http\.py$"),
    # The one timer of many deadlines (the body's, the pool's waits): its user's cost.
    Rule(PASS, file=r"^service/(.+/)?deadlines\.py$"),
    Rule(PASS, file=OURS, function=r"^closing_sessions\b"),
    Rule(OWN, Bucket.HANDLERS, file=OURS),
    # Only when nothing else claims the sample.
    Rule(FALLBACK, Bucket.EVENT_LOOP, file=r"^asyncio/|_asynciomodule\.c"),
    Rule(FALLBACK, Bucket.EVENT_LOOP, file=r"^uvloop/|(^|/)(loop|handles|core|linux|stream)\.c$"),
    Rule(FALLBACK, Bucket.EVENT_LOOP, file=r"(^|/)(timer|loop-watcher|heap-inl|queue)\.[ch]$"),
)

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


def parse_frame(text: str) -> tuple[str, str]:
    """`function (file)` or `function (file:line)` as py-spy writes it: (function, file)."""
    match = _FRAME.match(text)
    if match is None:
        return text, ""
    file = match["file"]
    if re.search(r":\d+$", file):
        file = file.rsplit(":", 1)[0]
    return match["function"], file


def _rule(function: str, file: str, rules: tuple[Rule, ...]) -> Rule | None:
    return next((rule for rule in rules if rule.matches(function, file)), None)


def classify(frames: list[str], rules: tuple[Rule, ...] = RULES) -> tuple[Bucket, str]:
    """The bucket of one sample (frames from the root to the leaf) and the frame that
    decided it."""
    decided = [(_rule(*parse_frame(frame), rules), frame) for frame in frames]
    entries = [index for index, (rule, _) in enumerate(decided) if rule and rule.kind == ENTRY]
    inside = decided[entries[-1] + 1 :] if entries else decided
    if not inside:
        # The loop itself, running code py-spy shows no frame of (without native frames:
        # uvloop's callbacks into C extensions).
        return Bucket.EVENT_LOOP, frames[-1]
    innermost: dict[str, tuple[Bucket, str]] = {}
    for rule, frame in reversed(inside):
        if rule is not None and rule.bucket is not None:
            if rule.kind == WHOLE:
                return rule.bucket, frame
            innermost.setdefault(rule.kind, (rule.bucket, frame))
    return innermost.get(OWN) or innermost.get(FALLBACK) or (Bucket.OTHER, frames[-1])


@dataclass(frozen=True)
class Folded:
    samples: Counter[Bucket]
    deciding: dict[Bucket, Counter[str]]
    """Per bucket, the frames that decided its samples: what to look at first."""

    @property
    def total(self) -> int:
        return sum(self.samples.values())


def fold(collapsed: str, rules: tuple[Rule, ...] = RULES) -> Folded:
    """py-spy's raw output (`frame;frame;… count` a line) folded into buckets."""
    samples: Counter[Bucket] = Counter()
    deciding: dict[Bucket, Counter[str]] = {}
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        bucket, frame = classify(stack.split(";"), rules)
        samples[bucket] += int(count)
        deciding.setdefault(bucket, Counter())[frame] += int(count)
    return Folded(samples, deciding)


@dataclass(frozen=True)
class Config:
    scenario: str
    seconds: int
    connections: int
    rate: int
    native: bool
    target: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        def number(name: str, default: int) -> int:
            raw = environ.get(name, "") or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise SettingsError(f"{name}={raw!r}: must be a whole number >= 1")
            return int(raw)

        target = environ.get("PROFILE_TARGET") or "service"
        if target not in bench.TARGETS:
            raise SettingsError(f"PROFILE_TARGET={target!r}: one of {bench.TARGETS}")
        scenario = environ.get("PROFILE_SCENARIO") or "mixed"
        if scenario not in bench.SCENARIOS:
            raise SettingsError(f"PROFILE_SCENARIO={scenario!r}: one of {bench.SCENARIOS}")
        return cls(
            scenario=scenario,
            seconds=number("PROFILE_SECONDS", 20),
            connections=number("PROFILE_CONNECTIONS", 8),
            rate=number("PROFILE_RATE", 200),
            native=(environ.get("PROFILE_NATIVE") or "1") != "0",
            target=target,
        )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # Fields 14 and 15 of stat(5), utime and stime; fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py_spy() -> str:
    path = Path(sys.executable).with_name("py-spy")
    if path.exists():
        return str(path)
    found = shutil.which("py-spy")
    if found is None:
        raise bench.BenchError("py-spy is not installed: `make profile` installs it")
    return found


def _record(
    config: Config, server: bench.Server, env: dict[str, str], output: Path
) -> dict[str, float]:
    """Run wrk a little longer than py-spy records, so that the whole recording is under
    load; wrk's result."""
    wrk = subprocess.Popen(
        [
            "wrk",
            "--threads=1",
            f"--connections={config.connections}",
            f"--duration={config.seconds + 2}s",
            "--timeout=10s",
            f"--script={bench.WRK_DIR / f'{config.scenario}.lua'}",
            server.base_url,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        command = [_py_spy(), "record", "--pid", str(server.process.pid)]
        command += ["--duration", str(config.seconds), "--rate", str(config.rate)]
        command += ["--format", "raw", "--nolineno", "--output", str(output)]
        command += ["--native"] if config.native else []
        spy = subprocess.run(
            command, capture_output=True, text=True, timeout=config.seconds + 60, check=False
        )
        if spy.returncode != 0 or not output.exists():
            raise bench.BenchError(
                f"py-spy failed (exit {spy.returncode}; it needs root or ptrace rights):\n"
                f"{spy.stdout}{spy.stderr}"
            )
        stdout, _ = wrk.communicate(timeout=config.seconds + 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, float] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise bench.BenchError(f"wrk gave no result under py-spy:\n{stdout}")


def table(folded: Folded, cpu_us_per_request: float) -> str:
    header = f"{'bucket':<54} {'samples':>8} {'share':>6} {'µs/req':>7}  deciding frames (top 2)"
    lines = [header, "-" * len(header)]
    for bucket, count in folded.samples.most_common():
        share = count / folded.total
        top = "; ".join(
            f"{frame} {n / count:.0%}" for frame, n in folded.deciding[bucket].most_common(2)
        )
        lines.append(
            f"{bucket.value:<54} {count:>8} {share:>6.1%} {share * cpu_us_per_request:>7.0f}  {top}"
        )
    lines.append(f"{'all':<54} {folded.total:>8} {1:>6.0%} {cpu_us_per_request:>7.0f}")
    return "\n".join(lines)


def profile(bench_config: bench.Config, config: Config) -> int:
    if shutil.which("wrk") is None:
        raise bench.BenchError("wrk is not installed: `make profile` installs it")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    bench.REPORTS.mkdir(parents=True, exist_ok=True)
    folded_path = bench.REPORTS / f"profile-{stamp}.folded"
    with ExitStack() as stack:
        database_url = stack.enter_context(bench.seeded_database(bench_config))
        server = bench.start_servers(stack, bench_config, database_url, (config.target,))[
            config.target
        ]
        env = bench.read_data_set(database_url, server).wrk_environment()
        bench.run_wrk(server, "mixed", bench.WARM_UP_SECONDS, bench_config.connections, 1, env)
        print(
            f"{config.scenario}: {config.connections} connections, {config.seconds} s "
            "unobserved, then as long under py-spy",
            flush=True,
        )
        cpu_before = cpu_seconds(server.process.pid)
        clean = bench.run_wrk(server, config.scenario, config.seconds, config.connections, 1, env)
        cpu_used = cpu_seconds(server.process.pid) - cpu_before
        observed = _record(config, server, env, folded_path)
    clean_seconds = clean["duration_us"] / 1e6
    cpu_us_per_request = cpu_used / clean["requests"] * 1e6
    folded = fold(folded_path.read_text())
    if folded.total == 0:
        raise bench.BenchError(f"py-spy recorded no sample: see {folded_path}")
    summary = (
        f"{config.target}, {config.scenario}, {config.connections} connections (wrk, closed "
        "loop); "
        f"unobserved: {clean['requests'] / clean_seconds:,.0f} req/s, "
        f"{cpu_used / clean_seconds:.2f} cores busy, {cpu_us_per_request:.0f} µs of CPU per "
        f"request; under py-spy ({config.rate} Hz{', native' if config.native else ''}): "
        f"{observed['requests'] / (observed['duration_us'] / 1e6):,.0f} req/s"
    )
    text = f"{summary}\n\n{table(folded, cpu_us_per_request)}\n"
    (bench.REPORTS / f"profile-{stamp}.txt").write_text(text)
    (bench.REPORTS / f"profile-{stamp}.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "config": asdict(config),
                "cpu_seconds": cpu_used,
                "unobserved": clean,
                "observed": observed,
                "cpu_us_per_request": cpu_us_per_request,
                "buckets": {
                    bucket.value: {
                        "samples": n,
                        "us_per_request": n / folded.total * cpu_us_per_request,
                    }
                    for bucket, n in folded.samples.most_common()
                },
                "rules": [asdict(rule) for rule in RULES],
            },
            indent=2,
        )
    )
    print(f"\n{text}\nreports: {bench.REPORTS}/profile-{stamp}.txt, .json, .folded")
    return 0


def main() -> int:
    try:
        bench_config = bench.Config.from_env(os.environ)
        config = Config.from_env(os.environ)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    try:
        return profile(bench_config, config)
    except bench.BenchError as error:
        print(f"profile failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
