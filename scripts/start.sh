#!/bin/sh
# Installs what ipchat needs, builds it, and runs chatd in the foreground with
# conf/chatd.conf (extra arguments are passed to chatd and override the file).
# Then, from another terminal:  ./build/client/chat -n alice
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec ./build/server/chatd --config=conf/chatd.conf "$@"
