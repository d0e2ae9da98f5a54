#!/usr/bin/env bash
# Installs the real clients that conformance/clients/run.sh and run_auth.sh drive:
#   - Debian `skopeo` (bookworm ships 1.9.x)
#   - PyPI `oras` (oras-py, the Python ORAS client), pinned
#   - Debian `openssl` (run_auth.sh makes its test CA with it)
# Idempotent: does nothing (and touches no network) when all are already present.
set -euo pipefail

ORAS_PY_VERSION="${ORAS_PY_VERSION:-0.2.43}"
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
fi

debs=()
if command -v skopeo >/dev/null 2>&1; then
  echo "install: skopeo present ($(skopeo --version))"
else
  debs+=(skopeo)
fi
if command -v openssl >/dev/null 2>&1; then
  echo "install: openssl present ($(openssl version))"
else
  debs+=(openssl)
fi
if [ "${#debs[@]}" -gt 0 ]; then
  echo "install: installing ${debs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${debs[@]}"
  skopeo --version
  openssl version
fi

have_oras="$("$PYTHON" - <<PY 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("oras"))
except m.PackageNotFoundError:
    print("")
PY
)"
if [ "$have_oras" = "$ORAS_PY_VERSION" ]; then
  echo "install: oras (python) $have_oras present"
else
  echo "install: installing oras==$ORAS_PY_VERSION (found '${have_oras:-none}')"
  "$PYTHON" -m pip install --disable-pip-version-check --root-user-action=ignore -q "oras==$ORAS_PY_VERSION"
fi
