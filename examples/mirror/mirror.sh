#!/usr/bin/env bash
# Mirroring packs from one registry to another, digests preserved, two ways:
#   - skopeo sync: every tag (version) of a pack repository, registry to registry
#   - oras cp (oras_copy.py, the same with oras-py): one version
# then checking that the mirror serves the same manifests (same digests) and that its
# /packs index lists the same packs, as /v2 pushes into packs/<id> are indexed.
#
#   examples/mirror/mirror.sh SOURCE_URL MIRROR_URL
#
# The source must hold the example packs (examples/packs/publish.sh SOURCE_URL).
set -euo pipefail

SRC="${1:?usage: mirror.sh SOURCE_URL MIRROR_URL}"
DST="${2:?usage: mirror.sh SOURCE_URL MIRROR_URL}"
SRC="${SRC%/}" DST="${DST%/}"
SRC_HOST="${SRC#*://}" DST_HOST="${DST#*://}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-mirror.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "mirror: $*" >&2; exit 1; }

# skopeo: no signature policy for this copy, plain HTTP, no credentials from the machine.
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/policy.json"
echo '{"auths":{}}' >"$WORK/auth.json"
export REGISTRY_AUTH_FILE="$WORK/auth.json"
SKOPEO=(skopeo --policy "$WORK/policy.json")

# ---- skopeo sync: policy-baseline and analyzer-secrets, every version
for pack in policy-baseline analyzer-secrets; do
  "${SKOPEO[@]}" sync --src docker --dest docker --preserve-digests \
    --src-tls-verify=false --dest-tls-verify=false \
    "$SRC_HOST/packs/$pack" "$DST_HOST/packs"
done

# ---- oras cp: task-scan-repo and bundle-baseline, one version each
"$PY" "$HERE/oras_copy.py" "$SRC_HOST/packs/task-scan-repo:0.3.1" "$DST_HOST/packs/task-scan-repo:0.3.1"
"$PY" "$HERE/oras_copy.py" "$SRC_HOST/packs/bundle-baseline:2025.1.0" "$DST_HOST/packs/bundle-baseline:2025.1.0"

# ---- The mirror serves the same artifacts
digest() {  # digest BASE REPO TAG: the manifest digest the registry answers with
  curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'
}
for ref in policy-baseline:1.0.0 analyzer-secrets:1.2.0 task-scan-repo:0.3.1 bundle-baseline:2025.1.0; do
  pack="${ref%%:*}" version="${ref#*:}"
  want="$(digest "$SRC" "packs/$pack" "$version")"
  got="$(digest "$DST" "packs/$pack" "$version")"
  [ -n "$want" ] && [ "$got" = "$want" ] || fail "packs/$ref: mirror has '$got', source '$want'"
  # The mirror's /packs index agrees, and the content it serves is the source's.
  curl -fsS "$DST/packs/$pack" >"$WORK/pack.json"
  "$PY" - "$WORK/pack.json" "$version" "$want" <<'PY' || fail "/packs/$pack on the mirror"
import json, sys
pack = json.load(open(sys.argv[1]))["pack"]
assert pack["version"] == sys.argv[2], pack
assert pack["manifestDigest"] == sys.argv[3], pack
PY
  curl -fsS -o "$WORK/src.bin" "$SRC/packs/$pack/$version"
  curl -fsS -o "$WORK/dst.bin" "$DST/packs/$pack/$version"
  cmp -s "$WORK/src.bin" "$WORK/dst.bin" || fail "packs/$ref: content differs"
  echo "packs/$ref: $got on both, content identical"
done
echo "mirror: ok"
