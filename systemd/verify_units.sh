#!/bin/sh
# verify_units.sh DIR SYSUSERS: `systemd-analyze verify` on the system unit DIR/chatd.service
# and the user unit DIR/user/chatd@.service (as an instance); then, if systemd-sysusers is
# installed, creates the account of SYSUSERS in a scratch root and checks it. Exit 77
# (skipped) without systemd-analyze.
set -eu
dir=$1
sysusers=$2
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not found: skipped"
  exit 77
fi
tmp=$(mktemp -d /tmp/ipchat-verify.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0
run() {
  echo "+ $*"
  # verify exits 0 even for some complaints it prints; any output is a finding.
  if ! out=$("$@" 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "$out"
    failed=1
  fi
}
# --man=no: the man pages in Documentation= are not installed while testing.
run systemd-analyze verify --man=no "$dir/chatd.service"
# A user manager needs a runtime dir of its own, even to verify: a temporary one.
mkdir -m 0700 "$tmp/xdg"
XDG_RUNTIME_DIR=$tmp/xdg
export XDG_RUNTIME_DIR
run systemd-analyze --user verify --man=no "$dir/user/chatd@verify.service"
# (As root only: it writes passwd and shadow files with their owners and modes.)
if command -v systemd-sysusers >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  mkdir -p "$tmp/root/etc"
  echo "+ systemd-sysusers --root=SCRATCH $sysusers"
  systemd-sysusers --root="$tmp/root" "$sysusers" || failed=1
  if grep -q '^ipchat:x:[0-9]*:[0-9]*:[^:]*:/var/lib/ipchat:.*nologin$' "$tmp/root/etc/passwd" &&
     grep -q '^ipchat:x:' "$tmp/root/etc/group"; then
    echo "sysusers: account and group ipchat, no login shell"
  else
    echo "sysusers: no account ipchat in the scratch root's /etc/passwd"
    failed=1
  fi
fi
[ $failed -eq 0 ] && echo "verified"
exit $failed
