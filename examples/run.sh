#!/usr/bin/env bash
# Runs the three examples against real servers, as CI does:
#   ci-publish/       curl POST /packs and oras push, then verification
#   taskrunner-pull/  the Rust client: resolve, pull, verify, unpack, cache
#   mirror/           skopeo sync and oras cp between two registries
#
#   bash examples/run.sh [BINARY]     # default target/debug/packs-registry
#
# Builds taskrunner-pull (cargo, the workspace's Cargo.lock), installs oras-py
# (PyPI `oras`, pinned) into a virtualenv of its own, cached between runs, and uses
# skopeo from the machine (conformance/clients/install.sh installs it). Each example
# gets fresh servers (BINARY serve, on free loopback ports, temporary data dirs),
# inheriting this script's environment. Prints `PASS  <example>` or `FAIL  <example>`
# with the end of its output, then `N passed, M failed`; exits non-zero on a failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-python3}"
ORAS_VERSION="0.2.43"
VENV="${EXAMPLES_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/packs-examples-oras-$ORAS_VERSION}"
BIN="${1:-$ROOT/target/debug/packs-registry}"

[ -x "$BIN" ] || { echo "examples: no registry binary at '$BIN'" >&2; exit 2; }
command -v skopeo >/dev/null || { echo "examples: skopeo missing (conformance/clients/install.sh)" >&2; exit 2; }
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('oras') == '$ORAS_VERSION'" 2>/dev/null; then
  echo "examples: installing oras==$ORAS_VERSION into $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "oras==$ORAS_VERSION"
fi
echo "examples: building taskrunner-pull"
(cd "$ROOT" && cargo build --quiet --locked -p taskrunner-pull)
PULL="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/taskrunner-pull"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-examples.XXXXXX")"
PIDS=()
PASSED=0
FAILED=0
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [ "$FAILED" -gt 0 ]; then echo "examples: work dir kept at $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start NAME: a fresh server; sets URL.
start() {
  local dir="$WORK/$1" attempt pid
  for attempt in 1 2 3; do  # a free port can be taken between the probe and the bind
    local addr="127.0.0.1:$(free_port)"
    rm -rf "$dir" && mkdir -p "$dir/data"
    "$BIN" serve --listen "$addr" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 150); do
      if curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
        PIDS+=("$pid"); URL="http://$addr"; return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  echo "examples: $BIN did not start: $(tail -n 20 "$dir/server.log")" >&2
  return 1
}

example() {  # example SLUG NAME COMMAND...
  local log="$WORK/$1.log" name="$2"; shift 2
  if (PYTHON="$VENV/bin/python" "$@") >"$log" 2>&1; then
    PASSED=$((PASSED + 1)); echo "PASS  $name"
  else
    FAILED=$((FAILED + 1)); echo "FAIL  $name"; tail -n 30 "$log" | sed 's/^/      | /'
  fi
}

start ci-publish
example ci-publish "ci-publish: curl POST /packs and oras push, served as published" \
  bash "$HERE/ci-publish/publish.sh" "$URL"

start taskrunner-pull
example taskrunner-pull "taskrunner-pull: policy-baseline@^1 pulled, verified, unpacked; second run from the cache" \
  bash "$HERE/taskrunner-pull/demo.sh" "$URL" "$PULL"

start mirror-source && SOURCE="$URL"
start mirror-target && TARGET="$URL"
example mirror "mirror: skopeo sync and oras cp, digests preserved, /packs agrees" \
  bash -c 'bash "$1/packs/publish.sh" "$2" && bash "$1/mirror/mirror.sh" "$2" "$3"' _ "$HERE" "$SOURCE" "$TARGET"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
