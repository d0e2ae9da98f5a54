#!/usr/bin/env bash
# Installs what tests/ui_browser.rs needs and prints the environment it reads:
#   - Debian's chromium and chromium-driver (headless Chromium and its WebDriver);
#   - axe-core (npm, pinned) for the accessibility check, in a cache directory.
#
#   eval "$(bash tests/ui/install.sh)"      # sets PACKS_TEST_AXE
#
# Start the driver yourself (`chromedriver --port=9515 &`) and set
# PACKS_TEST_CHROMEDRIVER=http://127.0.0.1:9515; .ci/run does both.
set -euo pipefail
AXE_VERSION="4.10.3"
CACHE="${PACKS_UI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/packs-ui-test}"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "ui: installing chromium and chromium-driver" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q chromium chromium-driver >&2; }
fi
AXE="$CACHE/axe-$AXE_VERSION/node_modules/axe-core/axe.min.js"
if [ ! -f "$AXE" ]; then
  echo "ui: installing axe-core@$AXE_VERSION into $CACHE" >&2
  mkdir -p "$CACHE/axe-$AXE_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/axe-$AXE_VERSION" \
    "axe-core@$AXE_VERSION" >&2
fi
echo "export PACKS_TEST_AXE=$AXE"
