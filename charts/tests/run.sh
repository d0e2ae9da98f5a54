#!/usr/bin/env bash
# The chart tests: helm lint and helm template of charts/packs-registry through Helm's
# own library (PyPI helm-python-sdk: Helm v4's Go SDK as a native library, no helm
# binary), every rendered object validated against the Kubernetes schemas
# (kubernetes-validate, strict; the ServiceMonitor with the npm package
# @kubernetes-models/prometheus-operator), values.schema.json refusing bad values,
# and the rendered Job and Deployment run with the real binary against PostgreSQL
# and S3 (moto, started by the tests), in the embedded mode, and in token mode over
# TLS; Helm's registry client logs in to, pushes to and pulls from the binary in
# token mode over TLS (test_helm_registry.py).
#
#   bash charts/tests/run.sh BINARY     # default target/debug/packs-registry
#
# Installs the pinned tools (requirements.txt, and the npm package) into a
# virtualenv of their own, cached between runs, then runs pytest. PostgreSQL is
# PACKS_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test); each
# test makes and drops a database of its own. Knobs:
#   CHART_TESTS_VENV=DIR     where the virtualenv lives
#   extra arguments after BINARY go to pytest (e.g. -k embedded)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
SM_VERSION="6.0.0"  # @kubernetes-models/prometheus-operator
STAMP="$(cat "$HERE/requirements.txt" | sha256sum | cut -c1-12)-$SM_VERSION"
VENV="${CHART_TESTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/packs-chart-tests-$STAMP}"
BIN="${1:-$ROOT/target/debug/packs-registry}"
shift || true

if [ ! -f "$VENV/.installed" ]; then
  echo "chart tests: installing the pinned tools into $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  npm install --prefix "$VENV/npm" --no-audit --no-fund --silent \
    "@kubernetes-models/prometheus-operator@$SM_VERSION"
  touch "$VENV/.installed"
fi

[ -x "$BIN" ] || { echo "chart tests: no registry binary at '$BIN'" >&2; exit 2; }
export PACKS_REGISTRY_BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
export PACKS_CHART_TESTS_NODE_MODULES="$VENV/npm/node_modules"
cd "$HERE"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" .
