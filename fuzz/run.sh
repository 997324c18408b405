#!/usr/bin/env bash
# Schemathesis against the live service (issue 5, "Fuzzing in CI"); `.ci/run` calls it as
# `bash fuzz/run.sh` after the test suites.
#
# It installs the exact pins of fuzz/requirements.txt into .venv (once per version of that
# file), starts `python -m service serve` on the embedded PostgreSQL in a throw-away
# DATA_DIR on 127.0.0.1, waits for /health/ready, fuzzes the operations of
# /schema/openapi.json with a fixed seed and a bounded number of examples (two passes, each
# on a fresh service), and exits non-zero on any finding. The service is always stopped
# with SIGTERM (which also stops its embedded PostgreSQL) and the folder removed.
#
# Environment (all optional):
#   FUZZ_SEED          seed of the generated data (default 20261130): a finding reproduces
#   FUZZ_EXAMPLES      most test cases per operation and phase (default 50)
#   FUZZ_PORT          port to serve on (default: a free one)
#   FUZZ_REPORT_DIR    when set, JUnit and NDJSON reports of each pass are written there
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SEED="${FUZZ_SEED:-20261130}"
EXAMPLES="${FUZZ_EXAMPLES:-50}"
VENV=.venv
BIN="$VENV/bin"
REQUIREMENTS=fuzz/requirements.txt

# shellcheck source=fuzz/live_service.sh
source fuzz/live_service.sh
install_requirements "$REQUIREMENTS"
open_workdir fuzz
port="${FUZZ_PORT:-$(free_port)}"
base="http://127.0.0.1:$port"
# Authentication on, as in production: one throw-away token with both scopes.
make_token fuzz

start_fresh_service() {  # a name for its data folder
    local data="$workdir/$1"
    echo "== starting the service on $base (embedded PostgreSQL in $data)"
    DATA_DIR="$data" HOST=127.0.0.1 PORT="$port" LOG_LEVEL=WARNING WORKERS=1 \
        API_TOKENS="$token_line" start_service "$workdir/service.log" "$base"
}

# -- the fuzzer ------------------------------------------------------------------------------
# Every check schemathesis has, among them:
#   not_a_server_error            API.md: "A 500 is a bug. No input ... may produce one."
#   status_code_conformance       every status answered is one the operation documents
#   content_type_conformance      application/json for resources, application/problem+json
#                                 for errors, as documented per status
#   response_schema_conformance   bodies match their documented schemas (User, Post, pages,
#                                 Problem)
#   response_headers_conformance  the headers each response documents (X-Request-ID, ETag,
#                                 Location, Retry-After, WWW-Authenticate) are there and valid
#   positive_data_acceptance      schema-valid requests are accepted
#   negative_data_rejection       schema-invalid input (wrong types, unknown fields, ids out
#                                 of range, limit out of 1..200, text outside its pattern) is
#                                 a 4xx, never accepted
#   unsupported_method            a method the document does not list is a 405 with `Allow`
#   ignored_auth                  without the token, or with a wrong one, a guarded operation
#                                 is a 401 (the open ones say `security: []`)
#   use_after_free,               stateful, along the document's links: a deleted user or post
#   ensure_resource_availability  is 404 afterwards, and a created one can be read back
#   allow_header_conformance, missing_required_header, object_level_authorization: run too
#                                 (no operation has a required header; tokens carry scopes,
#                                 not owners, so the last finds nothing to compare).
# The exceptions, each named with its reason, are in fuzz/hooks.py: the rules of the
# contract a schema cannot state (a signed cursor, an existing author, an unused
# Idempotency-Key, a matching If-Match, ...) and Litestar's OPTIONS `Allow`
# (litestar-org/litestar#4169). fuzz/schemathesis.toml adds 413 to the statuses that count
# as rejecting invalid input. Schemathesis's warning that operations "mostly rejected
# generated data" names rules of that list: for POST /posts the existing-author rule (a
# generated author_id rarely names a user; the stateful phase posts as real users, along
# the CreatePostOfUser link); for the listings and GET /posts/{post_id} the signed values (a
# generated cursor or Consistency-Token is never one the service issued). Which operations
# it names moves with the generated data (seen here: 1 before the feed, 5 with it).
CHECKS=all

schemathesis_run() {  # a pass's name, its time bound in seconds, then schemathesis options
    local name=$1 timeout_seconds=$2
    shift 2
    local reports=()
    if [[ -n "${FUZZ_REPORT_DIR:-}" ]]; then
        mkdir -p "$FUZZ_REPORT_DIR"
        reports=(--report junit,ndjson --report-dir "$(realpath "$FUZZ_REPORT_DIR")"
            --report-junit-path "$(realpath "$FUZZ_REPORT_DIR")/$name.junit.xml"
            --report-ndjson-path "$(realpath "$FUZZ_REPORT_DIR")/$name.ndjson")
    fi
    echo "== schemathesis: $name (seed $SEED, at most $EXAMPLES examples per operation)"
    local dropped="$workdir/dropped-$name.txt" status=0
    # No example database (one of past failures would make runs differ), and from the
    # throw-away folder, where schemathesis and hypothesis leave their caches. One worker,
    # so that a seed reproduces the same requests in the same order.
    (
        cd "$workdir"
        SCHEMATHESIS_HOOKS="$ROOT/fuzz/hooks.py" FUZZ_DROPPED="$dropped" \
            timeout --signal=TERM --kill-after=10 "$timeout_seconds" \
            "$ROOT/$BIN/schemathesis" --config-file "$ROOT/fuzz/schemathesis.toml" \
            run "$base/schema/openapi.json" \
            --seed "$SEED" \
            --max-examples "$EXAMPLES" \
            --workers 1 \
            --generation-database none \
            --checks "$CHECKS" \
            --request-timeout 10 \
            --header "Authorization: Bearer $token" \
            "${reports[@]}" \
            "$@"
    ) || status=$?
    if [[ -s "$dropped" ]]; then
        echo "== $name: failures dropped as the named exceptions of fuzz/hooks.py"
        sort "$dropped" | uniq -c | sort -rn
    fi
    return "$status"
}

# Each pass gets a service and database of its own: schemathesis judges what it sees by what
# it did in the same run (a 404 for a resource it deleted itself is fine), and a second run
# on the first one's data would get answers it cannot explain, e.g. a POST replayed under an
# Idempotency-Key the first pass generated too, naming a post that pass deleted since.
started=$SECONDS
failed=()
# Pass 1: every operation, all phases (examples, coverage, fuzzing, stateful).
start_fresh_service all-operations
schemathesis_run all-operations 120 || failed+=(all-operations)
stop_service

# Pass 2: conditional reads. Generated `If-None-Match` values practically never equal an
# ETag, so pass 1 never sees a 304; here every request sends `If-None-Match: *`, which
# matches any existing user or post (RFC 9110): the reads, and the writes that make ids.
start_fresh_service conditional-reads
schemathesis_run conditional-reads 60 \
    --include-operation-id getUser --include-operation-id getPost \
    --include-operation-id createUser --include-operation-id createPost \
    --include-operation-id listUsers --include-operation-id listPosts \
    --header 'If-None-Match: *' || failed+=(conditional-reads)
stop_service

if ((${#failed[@]})); then
    echo "!! fuzzing found problems in: ${failed[*]} ($((SECONDS - started)) s); see above" >&2
    exit 1
fi
echo "== fuzzing passed in $((SECONDS - started)) s"
