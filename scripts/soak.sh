#!/bin/sh
# Soak test: 32 clients x 2000 messages over every transport, with random client
# SIGKILLs; survivors' streams must be contiguous and complete, nothing left behind.
# Builds first. Tune with IPCHAT_SOAK_CLIENTS, IPCHAT_SOAK_MESSAGES, IPCHAT_SOAK_KILLS,
# IPCHAT_SOAK_SEED; pick one transport with --run_test=soak/_N, N in the order of
# transport/factory.cpp: 0 cond, 1 signal, 2 fifo, 3 msgq, 4 mmap, 5 uds.
set -eu
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
exec ./build/tests/soak_test --log_level=message "$@"
