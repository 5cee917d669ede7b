#!/usr/bin/env bash
# The main job on the bundled default model: install, build, convert models/kjv-tiny-longgen with
# its LongGen plan, show what came out, and generate a few sentences with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/kjv-tiny-longgen
out=out/kjv-tiny-longgen-lg
mkdir -p out
./build/lg-convert "$model" -o "$out" --force --plan "$model/longgen_plan.json" --rope keep
./build/lg-convert inspect "$out"
echo
echo "== generating from $out (CPU, temperature 0.8, top-p 0.9, seed 1)"
./build/lg-run "$out" -p "And God said" -n 80 --temp 0.8 --top-p 0.9 --seed 1
