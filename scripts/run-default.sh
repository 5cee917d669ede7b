#!/usr/bin/env bash
# The main job on the bundled default model: install, build, convert models/kjv-tiny-longgen with
# its LongGen plan, and show what came out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/kjv-tiny-longgen
out=out/kjv-tiny-longgen-lg
mkdir -p out
./build/lg-convert "$model" -o "$out" --force --plan "$model/longgen_plan.json" --rope keep
./build/lg-convert inspect "$out"
