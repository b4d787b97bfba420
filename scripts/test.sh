#!/bin/sh
# Installs what ipchat needs, builds it, and runs the whole test suite with CTest.
# IPCHAT_SKIP_INSTALL=1 skips the apt-get step (for machines that already have it).
set -eu
cd "$(dirname "$0")/.."
if [ "${IPCHAT_SKIP_INSTALL:-0}" != 1 ]; then
  ./scripts/install-deps.sh
fi
./scripts/build.sh
# The multi-user tests run chatd and clients under accounts of their own.
if [ "$(id -u)" -eq 0 ]; then
  ./scripts/test-accounts.sh
fi
cd "${IPCHAT_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "$(nproc)"
