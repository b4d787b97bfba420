#!/bin/sh
# Configures and builds ipchat into ./build (or $IPCHAT_BUILD_DIR). Extra arguments go to
# cmake's configure step, e.g. -DIPCHAT_SANITIZE=address,undefined.
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${IPCHAT_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPCHAT_WERROR=ON "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
