# Sourced by loadtests/run_loadtest.sh and fuzz/run.sh: the service as a background
# process, started, waited for, and stopped gracefully. Callers set BIN (the venv's bin).
#
#   start_service LOG BASE_URL   runs `python -m service serve` (settings from the caller's
#                                environment) with output appended to LOG, sets service_pid,
#                                and returns once BASE_URL/health/ready answers 200; exits
#                                the script, showing the log's tail, if it dies or is not
#                                ready within 60 s.
#   stop_service [SECONDS]       SIGTERM (the service drains its requests and stops its
#                                embedded PostgreSQL), SIGKILL after SECONDS (default 30).

service_pid=""

start_service() {
    local log=$1 base=$2 deadline=$((SECONDS + 60))
    "$BIN/python" -m service serve >>"$log" 2>&1 &
    service_pid=$!
    until curl -fsS -o /dev/null --max-time 2 "$base/health/ready" 2>/dev/null; do
        if ! kill -0 "$service_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "!! the service did not become ready at $base; its log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

stop_service() {
    local seconds=${1:-30}
    [[ -n "$service_pid" ]] || return 0
    if kill -0 "$service_pid" 2>/dev/null; then
        kill -TERM "$service_pid" 2>/dev/null || true
        for _ in $(seq $((seconds * 10))); do
            kill -0 "$service_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$service_pid" 2>/dev/null; then
            echo "!! the service did not stop within $seconds s of SIGTERM; killing it" >&2
            kill -KILL "$service_pid" 2>/dev/null || true
        fi
    fi
    wait "$service_pid" 2>/dev/null || true
    service_pid=""
}
