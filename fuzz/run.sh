#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (seconds, default 20), in turn. Used by
# .ci/run; a finding fails it (its input is left in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
targets=$(cargo +nightly fuzz list)
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${seconds}s"
  # A copy of the seeds to grow, so the repository's corpus stays as committed.
  work="$(mktemp -d)"
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  log="$work.log"
  status=0
  extra=()
  asan="${ASAN_OPTIONS:-}"
  # publish_form keeps one registry (its database pool, its runtime) for the whole
  # run on purpose; LeakSanitizer would report what is still alive at exit.
  if [ "$t" = publish_form ]; then extra+=(-detect_leaks=0); asan="detect_leaks=0"; fi
  ASAN_OPTIONS="$asan" cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    "${extra[@]}" > "$log" 2>&1 || status=$?
  grep -E "DONE|==[0-9]+==|SUMMARY|panicked|Done" "$log" || true
  if [ "$status" != 0 ]; then tail -n 40 "$log"; fi
  rm -rf "$work" "$log"
  if [ "$status" != 0 ]; then
    echo "fuzz: $t FAILED (see fuzz/artifacts/$t/)"
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a finding"
