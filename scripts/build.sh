#!/bin/sh
# Configures and builds ipchat into ./build (or $IPCHAT_BUILD_DIR). Extra arguments go to
# cmake's configure step, e.g. -DIPCHAT_SANITIZE=address,undefined. Uses ccache when it is
# installed (several checkouts of the tree share one cache through CCACHE_BASEDIR).
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${IPCHAT_BUILD_DIR:-build}
launcher=""
if command -v ccache >/dev/null 2>&1; then
  launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
  CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(cd .. && pwd)}
  export CCACHE_BASEDIR
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPCHAT_WERROR=ON $launcher "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
