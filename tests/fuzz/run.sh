#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20: the test suite's bounded run; pass
# more on demand, e.g. tests/fuzz/run.sh 3600), starting from seed corpora encoded by
# kafka-python (seeds.py) plus the regression inputs, which must all pass first.
# Needs a nightly toolchain and cargo-fuzz (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
../../.venv/bin/python seeds.py corpus
cargo +nightly fuzz build --fuzz-dir . -O
for target in request_frame record_batches; do
  mkdir -p "corpus/$target" "regressions/$target"
  # Every input that once crashed must now run clean.
  for input in regressions/"$target"/*; do
    [ -e "$input" ] && cargo +nightly fuzz run --fuzz-dir . -O "$target" "$input" -- -rss_limit_mb=2048 >/dev/null
  done
  cargo +nightly fuzz run --fuzz-dir . -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==ERROR)|SUMMARY' || true
  if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* >/dev/null 2>&1; then
    echo "fuzz target $target found a crash: see tests/fuzz/artifacts/$target" >&2
    exit 1
  fi
done
