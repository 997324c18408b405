# Sourced by fuzz/run.sh and clientgen/run.sh: what a tool run against the live service
# needs besides loadtests/service.sh (which this sources). Callers set VENV and BIN.
#
#   install_requirements FILE  pip-installs FILE's exact pins into $VENV on top of the
#                              service's own (`make install`), once per version of FILE
#   open_workdir NAME          makes a throw-away folder, $workdir, and an EXIT trap that
#                              stops the service, shows its log's tail if the script
#                              failed, and removes the folder
#   free_port                  prints a free TCP port on 127.0.0.1
#   make_token NAME            sets $token (random, known only to this run) and $token_line,
#                              the API_TOKENS line (NAME, read and write) that admits it

# shellcheck source=loadtests/service.sh
source loadtests/service.sh

install_requirements() {
    local requirements=$1 kind
    kind="$(basename "$(dirname "$requirements")")"
    make --no-print-directory --quiet install
    local stamp
    stamp="$VENV/.$kind-requirements-$(sha256sum "$requirements" | cut -c1-16)"
    if [[ ! -e "$stamp" ]]; then
        echo "== installing $requirements into $VENV"
        "$BIN/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        rm -f "$VENV/.$kind-requirements-"*
        touch "$stamp"
    fi
}

open_workdir() {
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/posts-service-$1.XXXXXX")"
    trap _close_workdir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_close_workdir() {
    local status=$?
    trap - EXIT INT TERM
    stop_service
    if [[ $status -ne 0 && -s "$workdir/service.log" ]]; then
        echo "== the service's log (last 60 lines)" >&2
        tail -n 60 "$workdir/service.log" >&2 || true
    fi
    rm -rf "$workdir"
    exit "$status"
}

free_port() {
    "$BIN/python" -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
'
}

make_token() {
    # The service keeps only its SHA-256; the tools send it (schemathesis masks it).
    token="$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    token_line="$1 read,write $(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
}
