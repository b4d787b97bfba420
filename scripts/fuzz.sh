#!/bin/bash
# Builds the libFuzzer targets with clang and runs each for IPCHAT_FUZZ_SECONDS (default 20)
# over a copy of its checked-in seed corpus (tests/fuzz/corpus/NAME). A crash fails the run
# and leaves the reproducer in the build dir; add it to the corpus and to a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-fuzz
SECONDS_EACH=${IPCHAT_FUZZ_SECONDS:-20}
CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPCHAT_FUZZ=ON \
  -DIPCHAT_WERROR=ON >/dev/null
TARGETS="frame_decoder_fuzz ring_reader_fuzz config_fuzz"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target $TARGETS
work=""
trap 'rm -rf "$work"' EXIT  # an interrupted run leaves no corpus copy behind either
for t in $TARGETS; do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$t/* "$work"/
  echo "fuzz: $t for ${SECONDS_EACH}s"
  (cd "$BUILD_DIR" && ./tests/fuzz/$t -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$PWD/$t-" "$work" 2>&1 | tail -n 4)
  rm -rf "$work"
done
echo "fuzz: no crashes"
