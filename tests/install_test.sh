#!/bin/sh
# install_test.sh BUILD_DIR FILE...: `cmake --install BUILD_DIR --prefix TMP`, then checks that
# every FILE (relative to the prefix, or absolute) was installed and that the installed chatd
# runs. Removes TMP whatever happens. Absolute FILEs (an absolute CMAKE_INSTALL_SYSCONFDIR,
# say) are staged under DESTDIR so that the test never writes outside TMP.
set -eu
build=$1
shift
tmp=$(mktemp -d /tmp/ipchat-install-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix=$tmp/prefix
root=
for f in "$@"; do
  case $f in /*) root=$tmp/root ;; esac
done
if [ -n "$root" ]; then
  DESTDIR=$root
  export DESTDIR
else
  unset DESTDIR
fi
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log"
  echo "FAIL: cmake --install failed"
  exit 1
}
failed=0
for f in "$@"; do
  case $f in
    /*) path=$root$f ;;
    *) path=$root$prefix/$f ;;
  esac
  if [ -f "$path" ]; then
    echo "ok: $f"
  else
    echo "FAIL: $f was not installed (no $path)"
    failed=1
  fi
done
chatd=$root$prefix/bin/chatd
if version=$("$chatd" --version) && [ "${version#chatd (ipchat) }" != "$version" ]; then
  echo "ok: installed chatd --version: $version"
else
  echo "FAIL: installed chatd --version printed '${version:-}'"
  failed=1
fi
exit $failed
