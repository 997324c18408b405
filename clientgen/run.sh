#!/usr/bin/env bash
# The generated-client test (issue 10); `.ci/run` calls it as `bash clientgen/run.sh`.
#
# As a calling service would: it generates a Python client with openapi-python-client from
# the LIVE document of a running service, fails on any generator warning (a response the
# generator cannot read is a response the client drops), and runs a full flow through the
# generated code (clientgen/test_flow.py): create, duplicate (409 as a parsed problem), get,
# page walks, PATCH with If-Match (200, then 412), conditional GET (304), a bad query (400
# as a parsed problem), a delete with its cascade, and a follower of the change feed (list,
# take Events-Cursor, change things, follow GET /events in small pages, a long poll).
#
# It installs the exact pins of clientgen/requirements.txt into .venv (once per version of
# that file), starts `python -m service serve` with a token required on the embedded
# PostgreSQL in a throw-away DATA_DIR on 127.0.0.1, and always stops it (SIGTERM) and
# removes the folder, generated code included: nothing generated is kept or committed.
#
# Environment (optional): CLIENTGEN_PORT, the port to serve on (default: a free one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

VENV=.venv
BIN="$VENV/bin"
REQUIREMENTS=clientgen/requirements.txt
PACKAGE=posts_service_client

# shellcheck source=fuzz/live_service.sh
source fuzz/live_service.sh
install_requirements "$REQUIREMENTS"
open_workdir clientgen
port="${CLIENTGEN_PORT:-$(free_port)}"
base="http://127.0.0.1:$port"
# Authentication on, as in production: a throw-away token with both scopes.
make_token clientgen

echo "== starting the service on $base"
DATA_DIR="$workdir/data" HOST=127.0.0.1 PORT="$port" LOG_LEVEL=WARNING WORKERS=1 \
    API_TOKENS="$token_line" start_service "$workdir/service.log" "$base"

# -- the client ------------------------------------------------------------------------------
echo "== generating $PACKAGE from $base/schema/openapi.json"
# On PATH: the venv's ruff, which the generator runs over its output.
if ! PATH="$ROOT/$BIN:$PATH" "$BIN/openapi-python-client" generate \
    --url "$base/schema/openapi.json" \
    --meta none \
    --config clientgen/config.yaml \
    --output-path "$workdir/client/$PACKAGE" \
    --fail-on-warning >"$workdir/generate.log" 2>&1 ||
    grep -qi "warning" "$workdir/generate.log"; then
    echo "!! the generator failed or warned:" >&2
    cat "$workdir/generate.log" >&2
    exit 1
fi

echo "== the flow through the generated client"
PYTHONPATH="$workdir/client" SERVICE_URL="$base" SERVICE_TOKEN="$token" \
    "$BIN/pytest" -p no:cacheprovider -q clientgen/test_flow.py
