#!/usr/bin/env bash
# `meson install` into a scratch root; then, as an agent author would: a C11 program built with
# `pkg-config bus_c` against the installed bus/bus.h and libbus_c.so.1 runs, and the installed
# Python package imports and talks to the installed library. ~10 s (the install).
set -euo pipefail
build=$1
opt() { meson introspect "$build" --buildoptions | python3 -c "
import json, sys
print(next(o['value'] for o in json.load(sys.stdin) if o['name'] == '$1'))"; }
if [ "$(opt b_sanitize)" != "none" ]; then
  echo "install check skipped: $build is a sanitizer build; it runs in the release build"
  exit 77
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# --no-rebuild: meson test has built everything already (and rebuilding here can take minutes)
meson install -C "$build" --destdir "$root" --quiet --no-rebuild >/dev/null
prefix=$(opt prefix)
libdir=$(opt libdir)
pc=$root$prefix/$libdir/pkgconfig
test -f "$pc/bus_c.pc" || { echo "bus_c.pc not installed under $pc" >&2; exit 1; }
test -f "$root$prefix/include/bus/bus.h" || { echo "bus/bus.h not installed" >&2; exit 1; }
test -e "$root$prefix/$libdir/libbus_c.so.1" || { echo "libbus_c.so.1 not installed" >&2; exit 1; }
soname=$(objdump -p "$root$prefix/$libdir/libbus_c.so.1" | awk '/SONAME/ {print $2}')
test "$soname" = "libbus_c.so.1" || { echo "soname $soname, want libbus_c.so.1" >&2; exit 1; }
cat >"$root/agent.c" <<'C'
#include <bus/bus.h>
#include <stdio.h>
int main(void) {
  bus_options o;
  bus_client* c = NULL;
  bus_status st;
  bus_options_init(&o);
  o.name = "installed";
  o.address = "/nonexistent/busd.sock";
  o.reconnect = 0;
  st = bus_connect(&o, &c); /* no busd there: a clean, typed error */
  if (bus_abi_version() != BUS_ABI_VERSION || c != NULL) return 2;
  printf("%s\n", bus_strerror(st));
  return 0;
}
C
flags=$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$pc pkg-config --cflags --libs bus_c)
# shellcheck disable=SC2086
# -rpath-link: libbus_c.so.1 needs libbus.so.0, which a destdir keeps out of the linker's default path
cc -std=c11 -Wall -Wextra -Werror -pedantic "$root/agent.c" -o "$root/agent" $flags -Wl,-rpath-link,"$root$prefix/$libdir"
out=$(LD_LIBRARY_PATH=$root$prefix/$libdir "$root/agent")
test "$out" = "NotFound" || { echo "C program: unexpected: $out" >&2; exit 1; }
echo "install check (C): ok (pkg-config bus_c, bus/bus.h, libbus_c.so.1)"
pkgdir=$(dirname "$(find "$root" -path '*/busd/__init__.py' | head -1)")
if [ "$pkgdir" = "." ]; then
  echo "install check (Python): the busd package was not installed (meson found no python3)" >&2
  exit 1
fi
out=$(cd "$root" && PYTHONPATH=$(dirname "$pkgdir") PYTHONDONTWRITEBYTECODE=1 \
  LD_LIBRARY_PATH=$root$prefix/$libdir BUSD_LIBBUS_C=$root$prefix/$libdir/libbus_c.so.1 python3 -c '
import busd
try:
    busd.Client("installed", address="/nonexistent/busd.sock", reconnect=False)
except busd.NotFound as e:
    print(busd.version(), type(e).__name__)
')
test "$out" = "0.1.0 NotFound" || { echo "Python package: unexpected: $out" >&2; exit 1; }
echo "install check (Python): ok ($pkgdir)"
