#!/usr/bin/env bash
# Publishing a pack from a CI job, two ways, then checking what the registry serves.
#
#   examples/ci-publish/publish.sh REGISTRY_URL [PACK_DIR]   # default examples/packs/policy
#
# 1. curl: POST /packs, multipart/form-data with the pack manifest (pack.json) and the
#    content (content/ as a reproducible tar.gz): the registry builds the OCI artifact.
# 2. oras push: the next minor version as an OCI artifact built by the client, with the
#    media types of the README: artifact type application/vnd.stellaops.pack.<type>.v1,
#    config application/vnd.stellaops.pack.config.v1+json (the pack manifest), content
#    layer application/vnd.stellaops.pack.content.v1.tar+gzip. (oras_push.py does with
#    oras-py what `oras push --artifact-type … --config …` does with the oras CLI.)
# 3. Verification: both versions listed by /packs, newest first; each download's bytes
#    and digest are the ones published; `^1` resolves to the oras-pushed version.
set -euo pipefail

REGISTRY="${1:?usage: publish.sh REGISTRY_URL [PACK_DIR]}"
REGISTRY="${REGISTRY%/}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACK_DIR="${2:-$HERE/../packs/policy}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/packs-ci-publish.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

json() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }
sha256() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
fail() { echo "ci-publish: $*" >&2; exit 1; }

PACK_ID="$(json "$PACK_DIR/pack.json" 'd["packId"]')"
TYPE="$(json "$PACK_DIR/pack.json" 'd["type"]')"
VERSION="$(json "$PACK_DIR/pack.json" 'd["version"]')"
NEXT="$(json "$PACK_DIR/pack.json" '"%d.%d.0" % (int(d["version"].split(".")[0]), int(d["version"].split(".")[1]) + 1)')"

# The content, reproducibly: the same folder always gives the same bytes (and digest).
tarball() {  # tarball DIR OUT
  tar -C "$1" --sort=name --mtime='2025-01-15 00:00:00Z' --owner=0 --group=0 --numeric-owner \
    -cf - . | gzip -n -9 >"$2"
}

# ---- 1. curl: POST /packs
tarball "$PACK_DIR/content" "$WORK/$PACK_ID-$VERSION.tar.gz"
status="$(curl -sS -o "$WORK/published.json" -w '%{http_code}' \
  -F "manifest=<$PACK_DIR/pack.json;type=application/json" \
  -F "content=@$WORK/$PACK_ID-$VERSION.tar.gz;type=application/vnd.stellaops.pack.content.v1.tar+gzip" \
  "$REGISTRY/packs")"
case "$status" in
  201 | 200) echo "curl: $PACK_ID $VERSION published ($status): $(cat "$WORK/published.json")" ;;
  *) fail "POST /packs answered $status: $(cat "$WORK/published.json")" ;;
esac
[ "$(json "$WORK/published.json" 'd["digest"]')" = "$(sha256 "$WORK/$PACK_ID-$VERSION.tar.gz")" ] \
  || fail "POST /packs: digest differs from the tarball's"

# ---- 2. oras push: the next version, with a changelog added to the content
mkdir -p "$WORK/next"
cp -R "$PACK_DIR/content/." "$WORK/next/"
echo "$NEXT: published from CI with oras push" >"$WORK/next/CHANGELOG"
CONTENT="$WORK/push/$PACK_ID-$NEXT.tar.gz"
mkdir -p "$WORK/push"
tarball "$WORK/next" "$CONTENT"
# The pack manifest of the new version, with the content's digest and size.
"$PY" - "$PACK_DIR/pack.json" "$NEXT" "$(sha256 "$CONTENT")" "$(stat -c %s "$CONTENT")" \
  >"$WORK/push/pack.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
manifest.update(version=sys.argv[2], digest=sys.argv[3], size=int(sys.argv[4]))
print(json.dumps(manifest))
PY
HOSTPORT="${REGISTRY#*://}"
pushed="$("$PY" "$HERE/oras_push.py" "$HOSTPORT/packs/$PACK_ID:$NEXT" \
  --artifact-type "application/vnd.stellaops.pack.$TYPE.v1" \
  --config "$WORK/push/pack.json:application/vnd.stellaops.pack.config.v1+json" \
  --annotation "org.opencontainers.image.version=$NEXT" \
  --annotation "org.opencontainers.image.created=2025-02-01T00:00:00Z" \
  "$CONTENT:application/vnd.stellaops.pack.content.v1.tar+gzip")"
echo "oras push: $PACK_ID:$NEXT manifest $pushed"

# ---- 3. What the registry now serves
curl -fsS "$REGISTRY/packs/$PACK_ID/versions" >"$WORK/versions.json"
listed="$(json "$WORK/versions.json" '" ".join(v["version"] for v in d["versions"])')"
echo "versions of $PACK_ID: $listed"
case " $listed " in
  *" $NEXT $VERSION "*) ;;
  *) fail "expected $NEXT then $VERSION in /packs/$PACK_ID/versions" ;;
esac
[ "$(json "$WORK/versions.json" "[v['manifestDigest'] for v in d['versions'] if v['version'] == '$NEXT'][0]")" = "$pushed" ] \
  || fail "the oras-pushed manifest is not the one /packs lists"
for v in "$VERSION" "$NEXT"; do
  src="$WORK/$PACK_ID-$VERSION.tar.gz"
  [ "$v" = "$NEXT" ] && src="$CONTENT"
  curl -fsS -D "$WORK/headers" -o "$WORK/download" "$REGISTRY/packs/$PACK_ID/$v"
  cmp -s "$WORK/download" "$src" || fail "GET /packs/$PACK_ID/$v: bytes differ from what was published"
  grep -qi "^etag: \"$(sha256 "$src")\"" "$WORK/headers" || fail "GET /packs/$PACK_ID/$v: ETag"
  echo "GET /packs/$PACK_ID/$v: $(sha256 "$WORK/download") (as published)"
done
curl -fsS -D "$WORK/headers" -o "$WORK/download" "$REGISTRY/packs/$PACK_ID/%5E${VERSION%%.*}"
grep -qi "^pack-version: $NEXT" "$WORK/headers" || fail "^${VERSION%%.*} did not resolve to $NEXT"
cmp -s "$WORK/download" "$CONTENT" || fail "^${VERSION%%.*}: bytes differ"
echo "GET /packs/$PACK_ID/^${VERSION%%.*}: $NEXT"
echo "ci-publish: ok"
