#!/usr/bin/env bash
# CPU speed of the dequantizing kernels: kjv-pg-llama (6 layers, dim 256, vocab 32000) converted to
# float (f16 source, float32 in memory), q8, q4 (group 64, with mins) and fp8, the linear layers and
# lm_head quantized (--quant-head: the head is most of this small model's weights); lg-run prefill
# and decode tokens/s, best of RUNS, and the weights held in memory. Usage: scripts/bench-quant-cpu.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
fixtures=${LG_FIXTURES:-../shared/fixtures}
bin=${LG_BIN:-build}
[ -x "$bin/lg-run" ] || scripts/build.sh
work=$(mktemp -d /tmp/lg-bench-quant-XXXXXX)
trap 'rm -rf "$work"' EXIT
prompt=$(head -c 2300 "$fixtures/text/pg-essays/worked.txt")
printf "machine: %s, %s cores\n\n" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)"
printf "| weights | held MB | prompt tokens | prefill tok/s | decode tok/s |\n| --- | --- | --- | --- | --- |\n"
for q in float q8 q4 fp8; do
  args=()
  [ "$q" != float ] && args=(--quant "$q" --quant-head)
  "$bin/lg-convert" "$fixtures/kjv-pg-llama" -o "$work/$q" -q --full-layers all --rope keep "${args[@]}"
  best_pre=0 best_gen=0 mb=0 np=0
  for _ in $(seq 1 "$runs"); do
    log=$("$bin/lg-run" "$work/$q" -p "$prompt" -n 128 2>&1 >/dev/null)
    mb=$(sed -n 's/^weights: \([0-9.]*\) MB.*/\1/p' <<<"$log")
    read -r np pre gen < <(sed -n 's/^prompt: \([0-9]*\) tokens, \([0-9.]*\) tokens\/s; generation: [0-9]* tokens, \([0-9.]*\) tokens\/s/\1 \2 \3/p' <<<"$log")
    best_pre=$(awk -v a="$best_pre" -v b="$pre" 'BEGIN { print (b > a ? b : a) }')
    best_gen=$(awk -v a="$best_gen" -v b="$gen" 'BEGIN { print (b > a ? b : a) }')
  done
  printf "| %s | %s | %s | %s | %s |\n" "$q" "$mb" "$np" "$best_pre" "$best_gen"
done
# the kernels alone, one thread: a 7B-sized GEMV (decode) and a 64-row product (prefill)
cc -O2 -std=c11 -D_GNU_SOURCE -Iformats -Iruntime -Iconvert -o "$work/quant-gemv" scripts/quant-gemv.c \
  "$bin/liblg_runtime.a" "$bin/liblg_convert.a" "$bin/liblg_formats.a" -lzstd -lcjson -lm -lpthread
echo
"$work/quant-gemv" 4096 4096 1
"$work/quant-gemv" 4096 4096 64
