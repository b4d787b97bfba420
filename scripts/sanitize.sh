#!/bin/bash
# Builds and runs the test suite under a sanitizer: `asan` (AddressSanitizer + UBSan) or
# `tsan` (ThreadSanitizer), each in its own build dir (build-asan, build-tsan).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/sanitize.sh asan|tsan}
case "$kind" in
  asan) flags="address,undefined" ;;
  tsan) flags="thread" ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan" >&2; exit 2 ;;
esac
BUILD_DIR=build-$kind
# -O1 with line tables only: reports keep file:line, and the build takes half the time of -O2 -g.
# chat-bench measures speed, which a sanitizer build cannot; it is left out.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DIPCHAT_WERROR=ON \
  -DIPCHAT_BENCH=OFF -DIPCHAT_SANITIZE="$flags" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# TSan cannot see synchronisation done by another process (futexes and atomics in shared
# memory); tests/tsan.supp lists exactly those cross-process accesses.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "$(nproc)"
