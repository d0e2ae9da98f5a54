#!/usr/bin/env bash
# Offline bundles with the real tools: `packs-registry bundle`, skopeo (Debian),
# Debian's docker-registry (CNCF Distribution 2.8) and oras-py (PyPI).
#
#   bash conformance/clients/install.sh          # once: skopeo + oras (python)
#   bash conformance/bundles/run.sh [BINARY]     # default target/debug/packs-registry
#
# Starts, on loopback ports with fresh data: registry A (the connected site), B and C
# (offline sites, empty), and a Distribution instance D; then bundles/check.py runs
# every check (PASS/FAIL lines, a last line `N passed, M failed`), and everything
# started is stopped on exit. Installs docker-registry from Debian when missing
# (without starting its service).
#
# Configurations: the embedded one by default (SQLite + filesystem, each server its
# own data folder). With BUNDLES_PRODUCTION=1 and PACKS_TEST_POSTGRES_URL and
# PACKS_TEST_S3_ENDPOINT set (an S3 server accepting any credentials, like moto),
# A, B and C each get a fresh database and a fresh bucket of their own.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"

BIN="${1:-$ROOT/target/debug/packs-registry}"
if [ ! -x "$BIN" ]; then
  echo "run.sh: no registry binary at '$BIN' (cargo build, or pass its path)" >&2
  exit 2
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "run.sh: installing Debian docker-registry (its service is not started)" >&2
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >&2
  if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v curl >/dev/null 2>&1 || missing+=(curl)
"$PY" -c 'import oras.client' >/dev/null 2>&1 || missing+=("oras (python)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: missing ${missing[*]}: run 'bash conformance/clients/install.sh' first" >&2
  exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-bundles.XXXXXX")"
PIDS=()
DATABASES=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${DATABASES[@]}"; do
    psql "$PACKS_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  if [ "$rc" -ne 0 ] || [ "${BUNDLES_KEEP:-0}" = "1" ]; then
    echo "run.sh: work dir kept at $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # URL PID LOG
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { echo "run.sh: server died; log:" >&2; tail -n 30 "$3" >&2; return 1; }
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "run.sh: $1 did not answer" >&2
  return 1
}

# Starts one of our registries named $1; sets ADDR to its host:port.
start_ours() {
  local name="$1" port env=()
  port="$(free_port)"
  mkdir -p "$WORK/$name"
  if [ "${BUNDLES_PRODUCTION:-0}" = "1" ]; then
    local db="packs_bundles_${name}_$$" bucket="packs-bundles-${name}-$$"
    psql "$PACKS_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    DATABASES+=("$db")
    curl -fsS -X PUT "$PACKS_TEST_S3_ENDPOINT/$bucket" >/dev/null
    env=(PACKS__METADATA__URL="${PACKS_TEST_POSTGRES_URL%/*}/$db"
         PACKS__STORAGE__BACKEND=s3 PACKS__STORAGE__S3__BUCKET="$bucket"
         PACKS__STORAGE__S3__ENDPOINT="$PACKS_TEST_S3_ENDPOINT"
         AWS_ACCESS_KEY_ID=bundles AWS_SECRET_ACCESS_KEY=bundles)
  fi
  env "${env[@]}" PACKS__LOG__LEVEL=warn \
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  wait_ready "http://127.0.0.1:$port/v2/" "$!" "$WORK/$name.log"
  ADDR="127.0.0.1:$port"
}

if [ "${BUNDLES_PRODUCTION:-0}" = "1" ]; then
  : "${PACKS_TEST_POSTGRES_URL:?BUNDLES_PRODUCTION=1 needs PACKS_TEST_POSTGRES_URL}"
  : "${PACKS_TEST_S3_ENDPOINT:?BUNDLES_PRODUCTION=1 needs PACKS_TEST_S3_ENDPOINT}"
  echo "run.sh: production configuration (PostgreSQL + S3)"
else
  echo "run.sh: embedded configuration (SQLite + filesystem)"
fi
start_ours a; A="$ADDR"
start_ours b; B="$ADDR"
start_ours c; C="$ADDR"

D_PORT="$(free_port)"
mkdir -p "$WORK/distribution"
cat > "$WORK/distribution.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/distribution
http:
  addr: 127.0.0.1:$D_PORT
EOF
docker-registry serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$D_PORT/v2/" "$!" "$WORK/distribution.log"
D="127.0.0.1:$D_PORT"
echo "run.sh: A=$A B=$B C=$C Distribution=$D (work dir $WORK)"

"$PY" "$HERE/check.py" --bin "$BIN" --a "$A" --b "$B" --c "$C" --distribution "$D" \
  --work "$WORK" --layout-helper "$ROOT/conformance/clients/oci_layout.py"
