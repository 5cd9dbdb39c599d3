#!/usr/bin/env bash
# deploy/k8s/*.yaml against the Kubernetes object schemas, offline (deploy/k8s/validate.js with
# the npm packages deploy/install-deps.sh puts in $BUSD_K8S_VALIDATOR, /opt/busd/k8s-validator by
# default); the busd.toml in its ConfigMap through `busd --check-config`. Then broken copies of
# the manifest, each of which the validator must refuse (else it proves nothing).
# Usage: k8s_validate.sh SOURCE_ROOT BUSD. About 3 s (node starts 8 times).
set -euo pipefail
src=$1
busd=$2
validator_dir=${BUSD_K8S_VALIDATOR:-/opt/busd/k8s-validator}
manifest=$src/deploy/k8s/busd-daemonset.yaml
validate=$src/deploy/k8s/validate.js

if ! command -v node >/dev/null; then
  echo "SKIP: node is not installed (deploy/install-deps.sh installs it): no k8s validator"
  exit 77
fi
if [ ! -d "$validator_dir/node_modules/kubernetes-models" ]; then
  echo "SKIP: the k8s validator is not installed in $validator_dir (run deploy/install-deps.sh)"
  exit 77
fi
if ! cmp -s "$src/deploy/k8s/validator/package-lock.json" "$validator_dir/package-lock.json"; then
  echo "FAIL: $validator_dir holds other versions than deploy/k8s/validator/package-lock.json: run deploy/install-deps.sh" >&2
  exit 1
fi
export NODE_PATH=$validator_dir/node_modules

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- the manifest"
node "$validate" "$manifest"
node "$validate" --data "$manifest" busd-config busd.toml >"$tmp/busd.toml"
"$busd" --config "$tmp/busd.toml" --check-config

# refused NAME EXPECTED_TEXT PYTHON_EDIT: a copy of the manifest changed by the edit (on the text
# `m`) must fail validation, and the validator's output must name the problem.
failures=0
refused() {
  local name=$1 expect=$2 edit=$3 out rc=0
  python3 - "$manifest" "$tmp/$name.yaml" "$edit" <<'PY'
import sys
m = open(sys.argv[1]).read()
before = m
exec(sys.argv[3])
assert m != before, "the edit changed nothing: the test is stale"
open(sys.argv[2], "w").write(m)
PY
  out=$(node "$validate" "$tmp/$name.yaml" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ] || ! grep -qF -- "$expect" <<<"$out"; then
    echo "FAIL: $name: expected a refusal naming '$expect' (exit $rc):"
    echo "$out"
    failures=$((failures + 1))
  else
    echo "ok   $name refused: $(grep -F -- "$expect" <<<"$out" | head -1 | sed 's/^ *//')"
  fi
}
echo "--- broken copies"
refused misspelled_field "readinesProbe: unknown field" 'm = m.replace("readinessProbe:", "readinesProbe:")'
refused misspelled_nested "hostPth: unknown field" 'm = m.replace("hostPath:", "hostPth:")'
refused wrong_type "terminationGracePeriodSeconds: must be integer" \
  'm = m.replace("terminationGracePeriodSeconds: 15", "terminationGracePeriodSeconds: \"15\"")'
refused wrong_type_bool "hostIPC: must be boolean" 'm = m.replace("hostIPC: true", "hostIPC: 1")'
refused missing_required "containers[0]: must have required property name" \
  'm = m.replace("        - name: busd\n          image:", "        - image:")'
refused unknown_kind "no Kubernetes schema" 'm = m.replace("kind: DaemonSet", "kind: DaemonSett")'
refused selector_mismatch "does not match the template" \
  'm = m.replace("    matchLabels:\n      app.kubernetes.io/name: busd", "    matchLabels:\n      app.kubernetes.io/name: busdx")'
refused duplicate_key "Map keys must be unique" 'm = m.replace("      hostIPC: true", "      hostIPC: true\n      hostIPC: false")'
if [ "$failures" -ne 0 ]; then
  echo "$failures broken manifest(s) accepted" >&2
  exit 1
fi
echo "k8s manifest: valid, and 8 broken copies refused"
