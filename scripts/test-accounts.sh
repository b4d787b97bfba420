#!/bin/sh
# Creates the Unix accounts the multi-user tests run processes under (needs root; safe to run
# again). None can log in; none has a home directory.
#   ipchat-srv  runs chatd in the tests (a server under test never runs as root)
#   ipchat-ann, ipchat-bob  members of group ipchat-chat
#   ipchat-eve  an account outside that group
# The accounts get uids >= 1000: they stand for the people on a shared host.
set -eu
[ "$(id -u)" -eq 0 ] || { echo "test-accounts.sh: needs root" >&2; exit 1; }
getent group ipchat-chat >/dev/null || groupadd ipchat-chat
for name in ipchat-srv ipchat-ann ipchat-bob ipchat-eve; do
  if ! getent passwd "$name" >/dev/null; then
    useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --key UID_MIN=1000 "$name"
  fi
done
for name in ipchat-srv ipchat-ann ipchat-bob; do
  usermod -a -G ipchat-chat "$name"
done
