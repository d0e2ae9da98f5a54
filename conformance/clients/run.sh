#!/usr/bin/env bash
# Real-client conformance: drives oras-py and skopeo against a real PacksRegistry server.
#
#   bash conformance/clients/install.sh          # once: skopeo (Debian) + oras (PyPI)
#   bash conformance/clients/run.sh [BINARY]     # default target/release/packs-registry
#
# Starts BINARY on a free loopback port with a fresh temporary data dir, waits for
# GET /v2/ to answer, runs every check, prints `PASS  <check>` / `FAIL  <check>: ...`
# per check and a last line `N passed, M failed`, stops the server on exit, and exits
# non-zero if anything failed.
#
# The server inherits this script's environment, so the same run covers other
# configurations, e.g.
#   PACKS__STORAGE__BACKEND=s3 PACKS__STORAGE__S3__BUCKET=... PACKS__METADATA__URL=postgres://... \
#     bash conformance/clients/run.sh target/release/packs-registry
# Other knobs:
#   CLIENTS_REGISTRY=HOST:PORT  test an already-running, empty registry instead of starting one
#   CLIENTS_COMMAND_TIMEOUT=120 seconds any one skopeo command may take
#   CLIENTS_ORAS_TIMEOUT=600    seconds the whole oras-py run may take
#   CLIENTS_KEEP=1              keep the temporary work dir (always kept on failure)
#   CLIENTS_STARTUP_TIMEOUT=60  seconds to wait for GET /v2/
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"

BIN="${1:-}"
if [ -z "$BIN" ]; then
  for b in "$ROOT/target/release/packs-registry" "$ROOT/target/debug/packs-registry"; do
    if [ -x "$b" ]; then BIN="$b"; break; fi
  done
fi

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v curl >/dev/null 2>&1 || missing+=(curl)
"$PY" -c 'import oras.client' >/dev/null 2>&1 || missing+=("oras (python)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: missing ${missing[*]}: run 'bash conformance/clients/install.sh' first" >&2
  exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-clients.XXXXXX")"
mkdir -p "$WORK/logs"
SERVER_PID=""
SUMMARY_PRINTED=""
PASSED=0
FAILED=0

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$FAILED" -gt 0 ] || [ "$rc" -ne 0 ] || [ "${CLIENTS_KEEP:-0}" = "1" ]; then
    # (After the summary it was already said: keep `N passed, M failed` the last line.)
    [ -n "$SUMMARY_PRINTED" ] || echo "run.sh: work dir kept at $WORK (server log: $WORK/server.log)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  local deadline=$((SECONDS + ${CLIENTS_STARTUP_TIMEOUT:-60}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
      return 1
    fi
    if curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

if [ -n "${CLIENTS_REGISTRY:-}" ]; then
  REG="$CLIENTS_REGISTRY"
  echo "run.sh: using the running registry at $REG"
  wait_ready || { echo "run.sh: $REG does not answer GET /v2/" >&2; exit 2; }
else
  if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "run.sh: no registry binary (got '${BIN}'); build it with 'cargo build --release' or pass its path" >&2
    exit 2
  fi
  started=0
  for attempt in 1 2 3; do  # a free port can be taken between the probe and the bind
    PORT="$(free_port)"
    REG="127.0.0.1:$PORT"
    rm -rf "$WORK/data"
    mkdir -p "$WORK/data"
    "$BIN" serve --listen "$REG" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    if wait_ready; then started=1; break; fi
    echo "run.sh: server did not come up on $REG (attempt $attempt); log:" >&2
    tail -n 30 "$WORK/server.log" >&2 || true
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  done
  if [ "$started" != 1 ]; then
    echo "run.sh: could not start $BIN" >&2
    exit 1
  fi
  echo "run.sh: $BIN serving on http://$REG (data dir $WORK/data)"
  env | grep -E '^PACKS__' | sed -E 's/^([^=]*(PASSWORD|SECRET|KEY|TOKEN|URL)[^=]*)=.*/\1=<redacted>/I; s/^/run.sh: env /' || true
fi

pass() { PASSED=$((PASSED + 1)); echo "PASS  $1"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    tail -n 25 "$2" | sed 's/^/      | /'
  fi
}

# run_check NAME FUNCTION: runs FUNCTION in a subshell with errexit, output to a log.
run_check() {
  local name="$1" fn="$2" log="$WORK/logs/$2.log" rc
  set +e
  ( set -euo pipefail; "$fn" ) >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then pass "$name"; else fail "$name (exit $rc)" "$log"; fi
}

die() { echo "check failed: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# skopeo
# ---------------------------------------------------------------------------------------
POLICY="$WORK/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
export REGISTRY_AUTH_FILE="$WORK/auth.json"  # no credentials from the machine
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
SK=(skopeo --policy "$POLICY" --tmpdir "$WORK" --command-timeout "${CLIENTS_COMMAND_TIMEOUT:-120}s")
LAYOUT="$WORK/layout"
REPO="$REG/packs/team/skopeo-test"

jget() {  # jget FILE PYTHON-EXPR-ON-d
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
sha() { "$PY" "$HERE/oci_layout.py" sha256 "$1"; }
layout_blob() { echo "$LAYOUT/blobs/sha256/${1#sha256:}"; }

sk_make_layout() {
  "$PY" "$HERE/oci_layout.py" make "$LAYOUT"
  "${SK[@]}" inspect --raw "oci:$LAYOUT:v1" >/dev/null
}

sk_copy_in() {
  local want got
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"
  "${SK[@]}" copy --preserve-digests --dest-tls-verify=false "oci:$LAYOUT:v1" "docker://$REPO:v1"
  "${SK[@]}" inspect --raw --tls-verify=false "docker://$REPO:v1" >"$WORK/raw-v1.json"
  got="$(sha "$WORK/raw-v1.json")"
  echo "layout $want, registry $got"
  [ "$got" = "$want" ] || die "manifest digest changed: $want -> $got"
  cmp "$WORK/raw-v1.json" "$(layout_blob "$want")" || die "manifest bytes differ"
}

sk_copy_out() {
  "${SK[@]}" copy --preserve-digests --src-tls-verify=false "docker://$REPO:v1" "oci:$WORK/out-v1:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-v1" v1
}

sk_inspect() {
  local want cfg
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"
  "${SK[@]}" inspect --tls-verify=false "docker://$REPO:v1" >"$WORK/inspect-v1.json"
  cat "$WORK/inspect-v1.json"
  [ "$(jget "$WORK/inspect-v1.json" 'd["Digest"]')" = "$want" ] || die "inspect Digest"
  [ "$(jget "$WORK/inspect-v1.json" 'd["Architecture"]')" = "amd64" ] || die "inspect Architecture"
  [ "$(jget "$WORK/inspect-v1.json" 'd["Labels"]["org.stellaops.test"]')" = "skopeo" ] || die "inspect Labels"
  [ "$(jget "$WORK/inspect-v1.json" '" ".join(d["Layers"])')" = \
    "$(jget "$(layout_blob "$want")" '" ".join(l["digest"] for l in d["layers"])')" ] || die "inspect Layers"
  [ "$(jget "$WORK/inspect-v1.json" '" ".join(d["RepoTags"])')" = "v1" ] || die "inspect RepoTags"
  # --config --raw is the config blob, byte for byte.
  "${SK[@]}" inspect --config --raw --tls-verify=false "docker://$REPO:v1" >"$WORK/config-v1.json"
  cfg="$(jget "$(layout_blob "$want")" 'd["config"]["digest"]')"
  cmp "$WORK/config-v1.json" "$(layout_blob "$cfg")" || die "config bytes differ"
  # By digest too.
  "${SK[@]}" inspect --raw --tls-verify=false "docker://$REPO@$want" | cmp - "$(layout_blob "$want")" || die "by-digest"
}

sk_copy_index() {
  local want
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" multi)"
  "${SK[@]}" copy --all --preserve-digests --dest-tls-verify=false "oci:$LAYOUT:multi" \
    "docker://$REG/packs/team/skopeo-multi:v1"
  "${SK[@]}" inspect --raw --tls-verify=false "docker://$REG/packs/team/skopeo-multi:v1" >"$WORK/raw-multi.json"
  [ "$(sha "$WORK/raw-multi.json")" = "$want" ] || die "index digest changed"
  [ "$(jget "$WORK/raw-multi.json" 'd["mediaType"]')" = "application/vnd.oci.image.index.v1+json" ] || die "mediaType"
  # The arm64 child by digest, and the platform pick of a plain inspect.
  local arm
  arm="$(jget "$WORK/raw-multi.json" '[m["digest"] for m in d["manifests"] if m["platform"]["architecture"]=="arm64"][0]')"
  "${SK[@]}" inspect --raw --tls-verify=false "docker://$REG/packs/team/skopeo-multi@$arm" | cmp - "$(layout_blob "$arm")"
  "${SK[@]}" --override-arch arm64 inspect --tls-verify=false "docker://$REG/packs/team/skopeo-multi:v1" >"$WORK/inspect-arm.json"
  # (inspect's Digest names what the tag points at, the index; the rest is the arm64 image.)
  [ "$(jget "$WORK/inspect-arm.json" 'd["Digest"]')" = "$want" ] || die "inspect Digest of the index"
  [ "$(jget "$WORK/inspect-arm.json" 'd["Architecture"]')" = "arm64" ] || die "arm64 pick"
  [ "$(jget "$WORK/inspect-arm.json" '" ".join(d["Layers"])')" = \
    "$(jget "$(layout_blob "$arm")" '" ".join(l["digest"] for l in d["layers"])')" ] || die "arm64 layers"
  "${SK[@]}" copy --all --preserve-digests --src-tls-verify=false "docker://$REG/packs/team/skopeo-multi:v1" \
    "oci:$WORK/out-multi:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" multi "$WORK/out-multi" v1
}

sk_copy_v2s2() {
  # Docker schema 2, converted by skopeo on the way in: the registry must store and
  # serve the Docker media types as they were pushed.
  local dst="docker://$REG/packs/team/skopeo-docker:v1"
  "${SK[@]}" copy --format v2s2 --dest-tls-verify=false "oci:$LAYOUT:v1" "$dst"
  "${SK[@]}" inspect --raw --tls-verify=false "$dst" >"$WORK/raw-v2s2.json"
  cat "$WORK/raw-v2s2.json"; echo
  [ "$(jget "$WORK/raw-v2s2.json" 'd["mediaType"]')" = "application/vnd.docker.distribution.manifest.v2+json" ] \
    || die "not a Docker schema 2 manifest"
  [ "$(jget "$WORK/raw-v2s2.json" 'd["config"]["mediaType"]')" = "application/vnd.docker.container.image.v1+json" ] \
    || die "config media type"
  # The same layers, byte for byte, coming back out through dir:.
  "${SK[@]}" copy --preserve-digests --src-tls-verify=false "$dst" "dir:$WORK/out-v2s2"
  cmp "$WORK/out-v2s2/manifest.json" "$WORK/raw-v2s2.json" || die "dir manifest differs"
  local d
  for d in $(jget "$WORK/raw-v2s2.json" '" ".join(l["digest"] for l in d["layers"])'); do
    cmp "$WORK/out-v2s2/${d#sha256:}" "$(layout_blob "$d")" || die "layer $d differs"
  done
  [ "$(sha "$WORK/out-v2s2/$(jget "$WORK/raw-v2s2.json" 'd["config"]["digest"]' | cut -d: -f2)")" = \
    "$(jget "$WORK/raw-v2s2.json" 'd["config"]["digest"]')" ] || die "config digest"
}

sk_sync() {
  local want mirrored
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"
  "${SK[@]}" sync --src docker --dest dir --src-tls-verify=false "$REPO" "$WORK/sync"
  ls -la "$WORK/sync" "$WORK/sync/skopeo-test:v1"
  "$PY" "$HERE/oci_layout.py" compare-dir "$LAYOUT" v1 "$WORK/sync/skopeo-test:v1"
  "${SK[@]}" sync --src dir --dest docker --dest-tls-verify=false "$WORK/sync/skopeo-test:v1" \
    "$REG/packs/mirror"
  mirrored="$("${SK[@]}" inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG/packs/mirror/skopeo-test:v1")"
  echo "source $want, mirror $mirrored"
  [ "$mirrored" = "$want" ] || die "mirrored digest $mirrored != $want"
  [ "$("${SK[@]}" inspect --tls-verify=false --format '{{.Digest}}' "docker://$REPO:v1")" = "$want" ] || die "source"
  "${SK[@]}" copy --src-tls-verify=false "docker://$REG/packs/mirror/skopeo-test:v1" "oci:$WORK/out-mirror:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-mirror" v1
}

sk_registry_to_registry() {
  # Same registry, other repository: skopeo tries a cross-repository mount.
  local want
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"
  "${SK[@]}" --debug copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REPO:v1" "docker://$REG/packs/other/skopeo-copy:v1" >"$WORK/copy-mount.log" 2>&1 \
    || { cat "$WORK/copy-mount.log"; die "copy failed"; }
  grep -E 'Trying to mount|mount OK|POST|PUT' "$WORK/copy-mount.log" || true
  # The layers were pushed to $REPO earlier in this run, so skopeo's blob-info cache
  # knows them there and mounts them (POST ?mount=&from=) instead of uploading again.
  [ "$(grep -c 'mount OK' "$WORK/copy-mount.log")" -ge 2 ] || die "expected 2 cross-repository mounts"
  [ "$("${SK[@]}" inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG/packs/other/skopeo-copy:v1")" = "$want" ] \
    || die "copied digest"
  "${SK[@]}" copy --src-tls-verify=false "docker://$REG/packs/other/skopeo-copy:v1" "oci:$WORK/out-copy:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-copy" v1
}

sk_list_tags() {
  local t
  for t in v2 1.0.0 latest; do
    "${SK[@]}" copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
      "docker://$REPO:v1" "docker://$REPO:$t"
  done
  "${SK[@]}" list-tags --tls-verify=false "docker://$REPO" >"$WORK/tags.json"
  cat "$WORK/tags.json"
  [ "$(jget "$WORK/tags.json" 'd["Repository"]')" = "$REPO" ] || die "Repository"
  [ "$(jget "$WORK/tags.json" '" ".join(sorted(d["Tags"]))')" = "1.0.0 latest v1 v2" ] || die "Tags"
  "${SK[@]}" list-tags --tls-verify=false "docker://$REG/packs/team/skopeo-multi" >"$WORK/tags-multi.json"
  [ "$(jget "$WORK/tags-multi.json" '" ".join(d["Tags"])')" = "v1" ] || die "multi Tags"
  # An unknown repository is an error, not an empty list.
  if "${SK[@]}" list-tags --tls-verify=false "docker://$REG/packs/team/no-such-repo" >"$WORK/tags-none.json" 2>&1; then
    cat "$WORK/tags-none.json"; die "list-tags of an unknown repository succeeded"
  fi
  cat "$WORK/tags-none.json"
}

sk_delete() {
  local want dst="docker://$REG/packs/team/skopeo-delete"
  want="$("$PY" "$HERE/oci_layout.py" digest "$LAYOUT" v1)"
  "${SK[@]}" copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$REPO:v1" "$dst:v1"
  "${SK[@]}" inspect --raw --tls-verify=false "$dst:v1" >/dev/null
  "${SK[@]}" delete --tls-verify=false "$dst:v1"
  if "${SK[@]}" inspect --raw --tls-verify=false "$dst:v1" >"$WORK/deleted.txt" 2>&1; then
    die "manifest still there after skopeo delete"
  fi
  cat "$WORK/deleted.txt"
  grep -qi "manifest unknown" "$WORK/deleted.txt" || die "expected 'manifest unknown'"
  if "${SK[@]}" inspect --raw --tls-verify=false "$dst@$want" >/dev/null 2>&1; then
    die "manifest still readable by digest after skopeo delete"
  fi
  "${SK[@]}" list-tags --tls-verify=false "$dst" >"$WORK/tags-deleted.json"
  [ "$(jget "$WORK/tags-deleted.json" 'len(d["Tags"] or [])')" = "0" ] || die "tags remain"
  # Deleting in one repository leaves the same content in another intact.
  [ "$("${SK[@]}" inspect --tls-verify=false --format '{{.Digest}}' "docker://$REPO:v1")" = "$want" ] || die "source gone"
  "${SK[@]}" copy --src-tls-verify=false "docker://$REPO:v1" "oci:$WORK/out-after-delete:v1"
  "$PY" "$HERE/oci_layout.py" compare "$LAYOUT" v1 "$WORK/out-after-delete" v1
}

echo "== skopeo ($(skopeo --version))"
run_check "skopeo: build OCI image layout (config + 2 gzip layers, and a 2-platform index)" sk_make_layout
run_check "skopeo: copy --preserve-digests oci: -> docker://, manifest digest and bytes kept" sk_copy_in
run_check "skopeo: copy docker:// -> new oci: layout, manifest digest + every blob byte-for-byte" sk_copy_out
run_check "skopeo: inspect, inspect --raw, --config --raw, by digest" sk_inspect
run_check "skopeo: copy --all image index (2 platforms) round trip, child by digest" sk_copy_index
run_check "skopeo: copy --format v2s2 (Docker schema 2) stored and served as pushed" sk_copy_v2s2
run_check "skopeo: sync docker -> dir -> docker (other repo), digests match" sk_sync
run_check "skopeo: copy registry -> registry (other repo, blob mount)" sk_registry_to_registry
run_check "skopeo: list-tags (4 tags, unknown repo is an error)" sk_list_tags
run_check "skopeo: delete removes the manifest, other repos keep the content" sk_delete

# ---------------------------------------------------------------------------------------
# oras (oras-py)
# ---------------------------------------------------------------------------------------
echo "== oras (oras-py $("$PY" -c 'import importlib.metadata as m; print(m.version("oras"))'))"
set +e
timeout "${CLIENTS_ORAS_TIMEOUT:-600}" "$PY" "$HERE/oras_check.py" "$REG" "$WORK/oras" 2>"$WORK/logs/oras.stderr" \
  | tee "$WORK/logs/oras.out"
oras_rc=${PIPESTATUS[0]}
set -e
oras_pass="$(grep -c '^PASS ' "$WORK/logs/oras.out" || true)"
oras_fail="$(grep -c '^FAIL ' "$WORK/logs/oras.out" || true)"
PASSED=$((PASSED + oras_pass))
FAILED=$((FAILED + oras_fail))
if [ "$oras_fail" -gt 0 ] || [ "$oras_rc" -ne 0 ]; then
  if [ "$oras_rc" -ne 0 ] && [ "$oras_fail" -eq 0 ]; then
    fail "oras: oras_check.py exited $oras_rc without reporting a failure" "$WORK/logs/oras.stderr"
  else
    echo "      oras_check.py stderr (last lines):"
    tail -n 40 "$WORK/logs/oras.stderr" | sed 's/^/      | /'
  fi
fi

# >>> packs: the /packs facade with oras-py (packs_oras_check.py)
echo "== oras + /packs (POST /packs pulled with oras, oras push listed by /packs)"
set +e
timeout "${CLIENTS_ORAS_TIMEOUT:-600}" "$PY" "$HERE/packs_oras_check.py" "$REG" "$WORK/oras-packs" \
  2>"$WORK/logs/oras-packs.stderr" | tee "$WORK/logs/oras-packs.out"
packs_rc=${PIPESTATUS[0]}
set -e
PASSED=$((PASSED + $(grep -c '^PASS ' "$WORK/logs/oras-packs.out" || true)))
packs_fail="$(grep -c '^FAIL ' "$WORK/logs/oras-packs.out" || true)"
FAILED=$((FAILED + packs_fail))
if [ "$packs_rc" -ne 0 ] && [ "$packs_fail" -eq 0 ]; then
  fail "oras packs: packs_oras_check.py exited $packs_rc without reporting a failure" "$WORK/logs/oras-packs.stderr"
elif [ "$packs_fail" -gt 0 ]; then
  tail -n 40 "$WORK/logs/oras-packs.stderr" | sed 's/^/      | /'
fi
# <<< packs

# ---------------------------------------------------------------------------------------
if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail "server: still running after all checks" "$WORK/server.log"
fi
if [ "$FAILED" -gt 0 ] && [ -f "$WORK/server.log" ]; then
  echo "---- server log (last 40 lines)"
  tail -n 40 "$WORK/server.log"
fi
if [ "$FAILED" -gt 0 ] || [ "${CLIENTS_KEEP:-0}" = "1" ]; then
  echo "run.sh: work dir kept at $WORK (server log: $WORK/server.log)"
fi
SUMMARY_PRINTED=1
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
