#!/usr/bin/env bash
# Quantized weights on the GPU (issue 5), one device call after the build:
#   1. correctness: the bundled kjv-tiny-longgen converted with --quant q8, q4 (group 64, mins) and
#      fp8; `lg-eval reference --device cpu` (the CPU's quantized kernels, whose products equal the
#      float32 products of the dequantized weights) then `lg-eval verify --device cuda` against it,
#      whose verdict counts: the CUDA logits within 2e-3 (relative), every argmax the same except at
#      near-ties, and the greedy ids identical;
#   2. speed: scripts/bench-decode.sh LAYERS 1024 with programmatic dependent launch on (7B shapes,
#      fp16 against --quant q8 and q4: ms/token, tokens/s, the speedup over fp16 and the rate against
#      the bandwidth limit).
# usage: scripts/bench-quant-gpu.sh [LAYERS]
set -uo pipefail
cd "$(dirname "$0")/.."
layers=${1:-32}
t_start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_start )) s] $*"; }
source scripts/device-build.sh
set +e
work=${LG_BENCH_DIR:-/tmp/lg-bench-quant}
rm -rf "$work"
mkdir -p "$work"
status=0

stamp "== correctness: kjv-tiny-longgen, CUDA against the CPU's quantized kernels"
src=models/kjv-tiny-longgen
ids=$src/reference.safetensors
for q in q8 q4 fp8; do
  "$B"/lg-convert "$src" -o "$work/tiny-$q" -q --rope keep --plan "$src/longgen_plan.json" --quant "$q" || { status=1; continue; }
  "$B"/lg-eval reference "$work/tiny-$q" -o "$work/tiny-$q.cpu.safetensors" --ids-from "$ids" --greedy 32 --device cpu || { status=1; continue; }
  r=$("$B"/lg-eval verify "$work/tiny-$q" --reference "$work/tiny-$q.cpu.safetensors" --device cuda --json 2>&1 | tail -1)
  echo "$q: cuda vs cpu: $r"
  case "$r" in *'"pass": true'*) ;; *) status=1 ;; esac
done

stamp "== speed: 7B shapes, $layers layers, context 1024"
LG_BENCH_PDL=1 LG_BENCH_DIR="$work/speed" bash scripts/bench-decode.sh "$layers" 1024 || status=1
stamp "done, status $status"
exit $status
