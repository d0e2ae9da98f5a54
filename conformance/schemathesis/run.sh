#!/usr/bin/env bash
# Fuzzes the /packs API against its own OpenAPI document with schemathesis (PyPI,
# pinned): every check (`--checks all`), so any 5xx, any status, header or body the
# document does not describe, or a malformed request accepted, fails.
#
#   bash conformance/schemathesis/run.sh [BINARY]   # default target/debug/packs-registry
#
# Installs schemathesis into its own virtualenv (cached between runs), starts BINARY on
# a free loopback port with a fresh data dir, seeds it with examples/packs (so the
# read operations meet real packs as well as unknown ones), runs schemathesis with a
# bounded number of examples per operation, checks the server never panicked, stops
# the server, and exits non-zero on any failure. Knobs:
#   SCHEMATHESIS_MAX_EXAMPLES=40   test cases per operation and phase
#   SCHEMATHESIS_TIMEOUT=600       seconds the whole schemathesis run may take
#   SCHEMATHESIS_VENV=DIR          where the virtualenv lives
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
ST_VERSION="4.32.5"
VENV="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/packs-schemathesis-$ST_VERSION}"
BIN="${1:-$ROOT/target/debug/packs-registry}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $ST_VERSION"; then
  echo "schemathesis: installing schemathesis==$ST_VERSION into $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-schemathesis.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "schemathesis: work dir kept at $WORK (server log: $WORK/server.log)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

started=0
for attempt in 1 2 3; do  # a free port can be taken between the probe and the bind
  REG="127.0.0.1:$(free_port)"
  rm -rf "$WORK/data" && mkdir -p "$WORK/data"
  "$BIN" serve --listen "$REG" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "http://$REG/packs/openapi.json" 2>/dev/null; then started=1; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  [ "$started" = 1 ] && break
  echo "schemathesis: server did not come up on $REG (attempt $attempt)" >&2
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
done
[ "$started" = 1 ] || { tail -n 30 "$WORK/server.log" >&2; exit 1; }
echo "schemathesis: $BIN serving on http://$REG"

bash "$ROOT/examples/packs/publish.sh" "http://$REG"

cd "$WORK"  # schemathesis writes its reports under the current directory
set +e
timeout "${SCHEMATHESIS_TIMEOUT:-600}" "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" \
  run "http://$REG/packs/openapi.json" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
  --workers 2 \
  --no-color
rc=$?
set -e
if grep -q 'panicked' "$WORK/server.log"; then
  echo "schemathesis: the server panicked:" >&2
  grep -A5 'panicked' "$WORK/server.log" >&2
  rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "schemathesis: FAILED (exit $rc)" >&2
  exit "$rc"
fi
echo "schemathesis: /packs conforms to its OpenAPI document"
