#!/usr/bin/env bash
# Publishes the example packs (policy, analyzer, task, bundle) to a running
# PacksRegistry with curl and POST /packs. The bundle goes last: it names the others
# as members, and the task depends on the policy and the analyzer.
#
#   examples/packs/publish.sh [REGISTRY_URL]      # default http://127.0.0.1:5000
#
# Each pack is a folder with pack.json (the pack manifest) and content/ (tarred and
# gzipped here, reproducibly). Publishing again is idempotent (200). With auth on, set
# PACKS_CREDENTIALS=user:password (an account with the push grant).
set -euo pipefail

REGISTRY="${1:-${PACKS_REGISTRY:-http://127.0.0.1:5000}}"
REGISTRY="${REGISTRY%/}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/packs-examples.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

for kind in policy analyzer task bundle; do
  dir="$HERE/$kind"
  tarball="$OUT/$kind.tar.gz"
  tar -C "$dir/content" --sort=name --mtime='2025-01-15 00:00:00Z' \
    --owner=0 --group=0 --numeric-owner -cf - . | gzip -n -9 >"$tarball"
  status="$(curl -sS -o "$OUT/$kind.json" -w '%{http_code}' \
    ${PACKS_CREDENTIALS:+-u "$PACKS_CREDENTIALS"} \
    -F "manifest=<$dir/pack.json;type=application/json" \
    -F "content=@$tarball;type=application/vnd.stellaops.pack.content.v1.tar+gzip" \
    "$REGISTRY/packs")"
  case "$status" in
    201) echo "published $kind: $(cat "$OUT/$kind.json")" ;;
    200) echo "already published $kind: $(cat "$OUT/$kind.json")" ;;
    *)
      echo "publishing $kind failed with HTTP $status: $(cat "$OUT/$kind.json")" >&2
      exit 1
      ;;
  esac
done
