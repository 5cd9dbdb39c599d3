#!/usr/bin/env bash
# `meson install` into a scratch root, then build a program against the installed headers and
# bus.pc with pkg-config, as an agent author would, and run it.
set -euo pipefail
build=$1
sanitize=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')
if [ "$sanitize" != "none" ]; then
  # A plain program cannot load a libbus built with sanitizers ("runtime does not come first").
  echo "install check skipped: $build is a -Db_sanitize=$sanitize build; it runs in the release build"
  exit 77
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --destdir "$root" --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
libdir=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "libdir"))')
pc=$root$prefix/$libdir/pkgconfig
test -f "$pc/bus.pc" || { echo "bus.pc not installed under $pc" >&2; exit 1; }
for f in client.hpp error.hpp envelope.hpp inplace.hpp wire/envelope_generated.h; do
  test -f "$root$prefix/include/bus/$f" || { echo "header bus/$f not installed" >&2; exit 1; }
done
ls "$root$prefix/$libdir"/libbus.so.0* >/dev/null
test -x "$root$prefix/sbin/busd" -o -x "$root$prefix/bin/busd"
cat >"$root/agent.cpp" <<'CPP'
#include <bus/client.hpp>
#include <cstdio>
int main() {
  bus::ClientOptions o;
  o.name = "installed";
  o.address = "/nonexistent/busd.sock";
  auto c = bus::Client::connect(o);  // no busd there: a clean, typed error
  std::printf("%s\n", c ? "connected?!" : std::string(bus::errc_name(c.error().code())).c_str());
  return c ? 1 : 0;
}
CPP
flags=$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$pc pkg-config --cflags --libs bus)
# shellcheck disable=SC2086
c++ -std=c++20 "$root/agent.cpp" -o "$root/agent" $flags
out=$(LD_LIBRARY_PATH=$root$prefix/$libdir "$root/agent")
test "$out" = "NotFound" || { echo "unexpected: $out" >&2; exit 1; }
echo "install check: ok (pkg-config bus, headers, libbus.so.0, busd)"
