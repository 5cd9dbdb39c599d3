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
meson install -C "$build" --no-rebuild --destdir "$root" --quiet >/dev/null  # meson test built everything
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
opt() {
  meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
sbindir=$(opt sbindir)
bindir=$(opt bindir)
datadir=$(opt datadir)
busd_bin=$root$prefix/$sbindir/busd
test -x "$busd_bin" || { echo "busd not installed at $prefix/$sbindir/busd" >&2; exit 1; }
for t in busctl busbench; do
  test -x "$root$prefix/$bindir/$t" || { echo "$t not installed in $prefix/$bindir" >&2; exit 1; }
done

# The systemd unit (its ExecStart names the installed busd), the sysusers file, and the examples.
unit=$root$prefix/lib/systemd/system/busd.service
test -f "$unit" || { echo "busd.service not installed in $prefix/lib/systemd/system" >&2; exit 1; }
grep -q "^ExecStart=$prefix/$sbindir/busd --config " "$unit" ||
  { echo "busd.service: ExecStart does not run $prefix/$sbindir/busd" >&2; exit 1; }
grep -q '^u busd ' "$root$prefix/lib/sysusers.d/busd.conf" ||
  { echo "sysusers file not installed as $prefix/lib/sysusers.d/busd.conf" >&2; exit 1; }
examples=$root$prefix/$datadir/doc/busd/examples
for f in busd.toml production-acl.toml cluster/a.toml cluster/b.toml cluster/c.toml rdma/rdma-a.toml rdma/rdma-b.toml \
         dpdk/memif-a.toml dpdk/memif-b.toml dpdk/nic.toml; do
  test -f "$examples/$f" || { echo "example $f not installed in $prefix/$datadir/doc/busd/examples" >&2; exit 1; }
  # The installed busd accepts each installed example.
  LD_LIBRARY_PATH=$root$prefix/$libdir "$busd_bin" --config "$examples/$f" --check-config >/dev/null ||
    { echo "installed example $f fails busd --check-config" >&2; exit 1; }
done
test -f "$examples/k8s/busd-daemonset.yaml" || { echo "k8s/busd-daemonset.yaml not installed" >&2; exit 1; }
test -f "$examples/grafana/busd-dashboard.json" || { echo "grafana/busd-dashboard.json not installed" >&2; exit 1; }
test -f "$root$prefix/$datadir/bash-completion/completions/busctl" || { echo "bash completion for busctl not installed" >&2; exit 1; }
# systemd-analyze verify on the unit as installed (against the installed busd).
rc=0
"$(dirname "$0")/../deploy/unit_verify.sh" "$unit" "$busd_bin" "$root$prefix/lib/sysusers.d/busd.conf" \
  >"$root/verify.log" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then
  echo "note: $(cat "$root/verify.log")"
elif [ "$rc" -ne 0 ]; then
  cat "$root/verify.log" >&2
  exit 1
fi
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
echo "install check: ok (pkg-config bus, headers, libbus.so.0, busd, busctl, busbench, busd.service" \
  "(systemd-analyze verify: $([ "$rc" -eq 0 ] && echo clean || echo skipped)), sysusers, examples)"
