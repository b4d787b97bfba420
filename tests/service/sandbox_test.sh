#!/bin/sh
# sandbox_test.sh CHATD CHAT: chatd.service's sandbox rebuilt by hand with unshare(1) and
# setpriv(1), so that it runs without systemd: an unprivileged account (nobody) with no
# capabilities and no_new_privs, the file system read-only but for the runtime dir
# (ProtectSystem=strict), /home and /root empty (ProtectHome=yes), a private /dev with the
# pseudo devices and the host's /dev/shm bound in (PrivateDevices=yes), and RUNTIME_DIRECTORY.
# For every transport: chatd starts in it, a client of the same account outside it chats,
# chatd stops with SIGTERM, exits 0 and leaves nothing. Needs root and mount namespaces
# (exit 77, skipped, otherwise). Not systemd itself: the unit's own options are checked by
# systemd_units_verify.
set -eu
chatd=$1
chat=$2
skip() {
  echo "$1: skipped"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root"
for p in unshare setpriv; do command -v $p >/dev/null 2>&1 || skip "$p not found"; done
unshare -m --propagation private true 2>/dev/null || skip "no mount namespaces here"
user=nobody
group=$(id -gn $user)

tmp=$(mktemp -d /tmp/ipchat-sandbox.XXXXXX)
chmod 0755 "$tmp"
rt=$tmp/run # stands for /run/ipchat
mkdir -m 0711 "$rt"
chown "$user:$group" "$rt"
server=
cleanup() {
  [ -n "$server" ] && kill -KILL "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# Run by unshare in the new mount namespace; becomes chatd.
sandbox='
set -eu
dev=$TMP/dev-$T
mkdir "$dev"
mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs "$dev"
for n in null zero full random urandom tty; do
  touch "$dev/$n"
  mount --bind "/dev/$n" "$dev/$n"
done
mkdir "$dev/shm"
mount --bind /dev/shm "$dev/shm"
if [ -d /dev/mqueue ]; then mkdir "$dev/mqueue"; mount --bind /dev/mqueue "$dev/mqueue"; fi
mount --move "$dev" /dev
for d in /home /root /run/user; do
  if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=0755 tmpfs "$d"; fi
done
mount --bind "$RT" "$RT"
mount -o remount,bind,ro /
exec setpriv --reuid="$USR" --regid="$GRP" --clear-groups --no-new-privs --bounding-set=-all \
  --inh-caps=-all env RUNTIME_DIRECTORY="$RT" "$CHATD" --transport="$T" --instance="$I"
'

owned_objects() {
  find /dev/shm -maxdepth 1 -user $user 2>/dev/null
  ipcs -a 2>/dev/null | awk -v u=$user '$3 == u'
}
before=$(owned_objects | wc -l)
failed=0
for t in cond signal mmap fifo msgq uds; do
  inst=sbx-$$-$t
  TMP=$tmp RT=$rt USR=$user GRP=$group CHATD=$chatd T=$t I=$inst \
    unshare -m --propagation private sh -c "$sandbox" 2>"$tmp/chatd.err" &
  server=$!
  i=0
  until [ -f "$rt/$inst/instance.json" ] || [ $i -ge 200 ]; do
    kill -0 $server 2>/dev/null || break
    sleep 0.05
    i=$((i + 1))
  done
  if ! out=$(printf 'hello from the sandbox test\n' |
    setpriv --reuid=$user --regid="$group" --clear-groups \
      "$chat" -n tester --jsonl --runtime-dir="$rt" --instance="$inst" 2>&1); then
    echo "FAIL $t: the client failed: $out"
    cat "$tmp/chatd.err"
    failed=1
  elif ! printf '%s\n' "$out" | grep -q 'hello from the sandbox test'; then
    echo "FAIL $t: no echo of the message: $out"
    failed=1
  fi
  kill -TERM $server 2>/dev/null || true
  code=0
  wait $server || code=$?
  server=
  if [ $code -ne 0 ]; then
    echo "FAIL $t: chatd exited $code"
    cat "$tmp/chatd.err"
    failed=1
  elif [ -n "$(ls -A "$rt")" ]; then
    echo "FAIL $t: left in the runtime dir: $(ls -A "$rt")"
    failed=1
  elif [ "$(owned_objects | wc -l)" -ne "$before" ]; then
    echo "FAIL $t: IPC objects of $user left: $(owned_objects)"
    failed=1
  else
    echo "ok: $t"
  fi
done
exit $failed
