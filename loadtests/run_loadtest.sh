#!/usr/bin/env bash
# `make loadtest`: seed a database of the load test's own, serve it on 127.0.0.1, run
# Locust headless against it, and stop the service whatever happens (trap). The exit code
# is Locust's: non-zero when the gate in locustfile.py failed (p95 or a failed request).
#
# Knobs (environment): LOADTEST_SECONDS (30), LOADTEST_USERS (32), LOADTEST_SPAWN_RATE
# (users per second, default all in one second), LOADTEST_P95_MS (50), LOADTEST_WAIT_MS (0),
# LOADTEST_CLASSES (ReadHeavyMix), LOADTEST_PORT (8100), LOADTEST_DATA_DIR (.data/loadtest),
# SEED_SCALE (1), LOADTEST_DATABASE_URL (a server to use instead of the embedded one: the
# seed empties its users and posts), LOADTEST_PROCESSES (1; N > 1 runs Locust distributed:
# a master that aggregates the stats, writes the reports and gates, and N worker processes
# that share the users).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
REPORTS=loadtests/reports
ADDRESS=127.0.0.1 # the only target: load goes to this machine, never elsewhere
PORT=${LOADTEST_PORT:-8100}
USERS=${LOADTEST_USERS:-32}
SPAWN_RATE=${LOADTEST_SPAWN_RATE:-$USERS}
RUN_SECONDS=${LOADTEST_SECONDS:-30}
CLASSES=${LOADTEST_CLASSES:-ReadHeavyMix}
PROCESSES=${LOADTEST_PROCESSES:-1}
if ! [[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
    echo "configuration error: LOADTEST_PROCESSES=$PROCESSES: must be a whole number >= 1" >&2
    exit 2
fi
# Locust's own distributed mode on this machine: `--processes N` forks N workers and makes
# this process their master (one process, the default, runs users and gate itself).
distributed=()
if ((PROCESSES > 1)); then
    distributed=(--processes "$PROCESSES")
fi
STOP_TIMEOUT_SECONDS=30

# The load test owns its data: never the DATABASE_URL of the caller's environment, since
# seeding empties the tables first.
export DATA_DIR=${LOADTEST_DATA_DIR:-.data/loadtest}
export DATABASE_URL=${LOADTEST_DATABASE_URL:-}
mkdir -p "$REPORTS"
service_log="$REPORTS/service.log"
locust_pid=""
# shellcheck source=loadtests/service.sh
source loadtests/service.sh

stop_all() {
    if [[ -n "$locust_pid" ]] && kill -0 "$locust_pid" 2>/dev/null; then
        kill -TERM "$locust_pid" 2>/dev/null || true # Locust writes its reports and exits
        wait "$locust_pid" 2>/dev/null || true
    fi
    stop_service "$STOP_TIMEOUT_SECONDS"
    # A service that was killed, or died, leaves its embedded PostgreSQL running.
    if [[ -z "$DATABASE_URL" ]]; then
        "$BIN/python" -m loadtests.embedded stop "$DATA_DIR" >/dev/null || true
    fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== seeding $DATA_DIR"
"$BIN/python" -m loadtests.seed

echo "== starting the service on $ADDRESS:$PORT (log: $service_log)"
# As in production: request logs on (LOG_LEVEL=INFO, into the service log) and a token
# required; the token is made for this run only.
LOADTEST_TOKEN=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
export LOADTEST_TOKEN
token_digest=$(printf %s "$LOADTEST_TOKEN" | sha256sum | cut -d' ' -f1)
: >"$service_log"
# The seeded rows' events are up to three years old: kept (the longest retention allowed),
# or the service's first pruning round would delete ~200,000 of them during the run.
API_TOKENS="loadtest read,write $token_digest" HOST=$ADDRESS PORT=$PORT LOG_LEVEL=INFO \
    EVENTS_RETENTION_HOURS=87600 start_service "$service_log" "http://$ADDRESS:$PORT"

echo "== locust: $USERS users ($CLASSES) for ${RUN_SECONDS} s in $PROCESSES process(es)"
# In the background and waited for, so that a signal to this script is handled at once
# (bash runs traps only between commands); `timeout`: a hung Locust cannot hold the run
# past its time and a margin.
# shellcheck disable=SC2086 # CLASSES is a list of class names
timeout --signal=TERM --kill-after=30 $((RUN_SECONDS + 120)) \
    "$BIN/locust" -f loadtests/locustfile.py --headless --only-summary \
    --host "http://$ADDRESS:$PORT" --users "$USERS" --spawn-rate "$SPAWN_RATE" \
    --run-time "${RUN_SECONDS}s" --stop-timeout 5 \
    --csv "$REPORTS/locust" --html "$REPORTS/locust.html" "${distributed[@]}" $CLASSES &
locust_pid=$!
status=0
wait "$locust_pid" || status=$?
locust_pid=""
echo "reports: $REPORTS/locust_stats.csv, $REPORTS/locust.html; service log: $service_log"
if grep -q '"level":"\(WARNING\|ERROR\|CRITICAL\)"' "$service_log"; then
    echo "== service log (warnings and errors):"
    grep '"level":"\(WARNING\|ERROR\|CRITICAL\)"' "$service_log" | tail -n 20
fi
exit "$status"
