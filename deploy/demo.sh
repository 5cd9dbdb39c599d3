#!/usr/bin/env bash
# The README's main job. Until busd lands ([daemon]) it builds the tree and runs a short
# busbench of the local data plane: the shared-memory ring next to its same-run baselines, and
# the per-message cost of encoding and verifying an Envelope.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f build/build.ninja ]; then
  meson setup --reconfigure build --buildtype=release >/dev/null
else
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build
build/agents/busbench/busbench ring --quick
build/agents/busbench/busbench envelope --runs 3
