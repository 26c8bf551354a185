#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS seconds (default 600),
# starting from its checked-in corpus (fuzz/corpus/<target>). New inputs go to a scratch
# directory, so the checked-in corpora stay small; a crash stops the script and leaves the
# input in fuzz/artifacts/<target>/. FUZZ_TARGETS picks targets (default: all four).
#   scripts/fuzz.sh                     # 10 minutes per target
#   FUZZ_SECONDS=15 scripts/fuzz.sh     # the smoke run CI does
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz builds with the address sanitizer, a nightly flag: RUSTC_BOOTSTRAP lets the
# stable toolchain accept it.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${TIDEMARK_FUZZ_TARGET_DIR:-$HOME/.cache/tidemark/fuzz-target}"
seconds="${FUZZ_SECONDS:-600}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in ${FUZZ_TARGETS:-pgoutput text_decode sink_decode config}; do
  mkdir -p "corpus/$target" "$scratch/$target"
  echo "== fuzz $target for ${seconds}s"
  log="$scratch/$target.log"
  if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed (above: a build error, or a crash whose input is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$log" || tail -n 5 "$log"
done
