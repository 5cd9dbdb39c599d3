#!/usr/bin/env bash
# `systemd-analyze verify` on busd's unit file. systemd-analyze wants the ExecStart binary to
# exist, so a copy of the unit runs BUSD (the built busd, or the one `meson install` put in a
# scratch root) instead of its install path; everything else is the unit as installed. A copy
# with a misspelled directive must draw a complaint, or the check proves nothing.
# With SYSUSERS (the sysusers.d file), also a dry run of systemd-sysusers on it in a scratch
# root: it must create the group and user busd.
# Usage: unit_verify.sh UNIT BUSD [SYSUSERS]. About 1 s.
set -euo pipefail
unit=$1
busd=$(realpath "$2")
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed (Debian package systemd): cannot verify $unit"
  exit 77
fi
test -f "$unit" || { echo "FAIL: no unit file at $unit" >&2; exit 1; }
test -x "$busd" || { echo "FAIL: no busd at $busd" >&2; exit 1; }

# The unit as an operator gets it: notify protocol, runtime directory, its own user, hardening.
for want in '^Type=notify$' '^RuntimeDirectory=busd$' '^User=busd$' '^Group=busd$' \
            '^ExecReload=/bin/kill -HUP \$MAINPID$' '^NoNewPrivileges=yes$' '^ProtectSystem=strict$' \
            '^ProtectHome=yes$' '^PrivateTmp=yes$' '^ProtectKernelTunables=yes$' '^ProtectKernelModules=yes$' \
            '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK$' '^ExecStart=/[^ ]*/busd --config /[^ ]*/busd/busd.toml$'; do
  grep -qE "$want" "$unit" || { echo "FAIL: $unit has no line matching $want" >&2; exit 1; }
done
if grep -q '@[A-Z]*@' "$unit"; then
  echo "FAIL: $unit still has unsubstituted @VARIABLES@" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -E "s|^ExecStart=/[^ ]*/busd |ExecStart=$busd |" "$unit" >"$tmp/busd.service"

# verify exits 0 on unknown keys and bad values (it only warns): any line naming the unit fails.
verify() {
  local out rc=0
  out=$(cd "$1" && systemd-analyze verify --man=no ./busd.service 2>&1) || rc=$?
  [ -n "$out" ] && printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && ! grep -q 'busd.service' <<<"$out"
}
echo "--- systemd-analyze verify $unit (ExecStart=$busd)"
if ! verify "$tmp"; then
  echo "FAIL: systemd-analyze verify complains about the unit" >&2
  exit 1
fi
mkdir "$tmp/bad"
sed 's/^ProtectHome=yes/ProtectHom=yes/' "$tmp/busd.service" >"$tmp/bad/busd.service"
if verify "$tmp/bad" >/dev/null; then
  echo "FAIL: a misspelled directive (ProtectHom=) passed systemd-analyze verify: the check is blind" >&2
  exit 1
fi
echo "unit: systemd-analyze verify clean; a misspelled directive is caught"
if [ $# -ge 3 ]; then
  out=$(systemd-sysusers --root="$tmp" --dry-run "$3" 2>&1) || { echo "$out" >&2; echo "FAIL: systemd-sysusers refuses $3" >&2; exit 1; }
  grep -q "Creating group 'busd'" <<<"$out" && grep -q "Creating user 'busd'" <<<"$out" ||
    { echo "$out" >&2; echo "FAIL: $3 does not create group and user busd" >&2; exit 1; }
  echo "sysusers: $3 creates group and user busd"
fi
