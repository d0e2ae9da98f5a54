#!/usr/bin/env bash
# taskrunner-pull against a running registry: publish the example packs, pull
# policy-baseline@^1 (downloaded, verified, unpacked), pull it again (from the cache:
# the registry's /metrics show no manifest or blob read for it), and resolve a
# requirement nothing matches (an error).
#
#   examples/taskrunner-pull/demo.sh REGISTRY_URL [TASKRUNNER_PULL_BINARY]
#
# The binary defaults to target/debug/taskrunner-pull (cargo build -p taskrunner-pull).
set -euo pipefail

REGISTRY="${1:?usage: demo.sh REGISTRY_URL [TASKRUNNER_PULL_BINARY]}"
REGISTRY="${REGISTRY%/}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PULL="${2:-$ROOT/target/debug/taskrunner-pull}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-taskrunner-pull.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "taskrunner-pull: $*" >&2; exit 1; }

# Manifest and blob reads the registry has served (GET and HEAD, any status).
pulls() {
  curl -fsS "$REGISTRY/metrics" \
    | awk '/^packs_registry_http_requests_total\{/ && /route="v2_(manifest|blob)"/ && /method="(GET|HEAD)"/ { n += $NF } END { print n + 0 }'
}

bash "$ROOT/examples/packs/publish.sh" "$REGISTRY" >/dev/null

before="$(pulls)"
"$PULL" --registry "$REGISTRY" --cache "$WORK/cache" 'policy-baseline@^1' | tee "$WORK/first.txt"
grep -q '^downloaded ' "$WORK/first.txt" || fail "the first run did not download"
after_first="$(pulls)"
[ "$after_first" -gt "$before" ] || fail "the first run read no manifest or blob"
folder="$(tail -n 1 "$WORK/first.txt" | cut -d' ' -f4)"
diff -r "$ROOT/examples/packs/policy/content" "$folder" || fail "unpacked content differs from the pack's"
[ -f "$(dirname "$folder")/pack.json" ] || fail "no pack.json beside the content"

"$PULL" --registry "$REGISTRY" --cache "$WORK/cache" 'policy-baseline@^1' | tee "$WORK/second.txt"
grep -q '^cached ' "$WORK/second.txt" || fail "the second run did not use the cache"
after_second="$(pulls)"
[ "$after_second" = "$after_first" ] \
  || fail "the second run read $((after_second - after_first)) manifests or blobs"
echo "second run: no manifest or blob read (registry counters $after_first -> $after_second)"

"$PULL" --registry "$REGISTRY" --cache "$WORK/cache" 'task-scan-repo@~0.3' >"$WORK/task.txt"
grep -q '^downloaded ' "$WORK/task.txt" || fail "task-scan-repo was not downloaded"
if "$PULL" --registry "$REGISTRY" --cache "$WORK/cache" 'policy-baseline@^9' 2>"$WORK/none.txt"; then
  fail "policy-baseline@^9 resolved to something"
fi
grep -q 'no version of policy-baseline matches' "$WORK/none.txt" || fail "$(cat "$WORK/none.txt")"
echo "taskrunner-pull: ok"
