#!/usr/bin/env bash
# CPU prefill and decode speed of kjv-pg-llama (6 layers, dim 256, vocab 32000) with lg-run, and the
# fraction of the machine's memory read bandwidth that decode reaches (decode reads every float32
# weight once per token). Prints a table. Usage: scripts/bench-cpu.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
fixtures=${LG_FIXTURES:-../shared/fixtures}
scripts/build.sh
work=$(mktemp -d /tmp/lg-bench-cpu-XXXXXX)
trap 'rm -rf "$work"' EXIT
./build/lg-convert "$fixtures/kjv-pg-llama" -o "$work/model" -q --full-layers all --rope keep
cc -O2 -pthread -o "$work/membw" scripts/membw.c
bw=$("$work/membw" "$(nproc)")
# a prompt of about 500 tokens: the start of an essay
prompt=$(head -c 2300 "$fixtures/text/pg-essays/worked.txt")
printf "machine: %s, %s cores\n" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)"
printf "memory read bandwidth (membw, %s threads): %s GB/s\n\n" "$(nproc)" "$bw"
printf "%-4s %14s %16s %16s %12s %14s\n" run prompt_tokens prefill_tok_s decode_tok_s weights_MB decode_bw_frac
for r in $(seq 1 "$runs"); do
  log=$(./build/lg-run "$work/model" -p "$prompt" -n 128 2>&1 >/dev/null)
  mb=$(sed -n 's/^weights: \([0-9.]*\) MB.*/\1/p' <<<"$log")
  read -r np pre gen < <(sed -n 's/^prompt: \([0-9]*\) tokens, \([0-9.]*\) tokens\/s; generation: [0-9]* tokens, \([0-9.]*\) tokens\/s/\1 \2 \3/p' <<<"$log")
  frac=$(awk -v mb="$mb" -v g="$gen" -v bw="$bw" 'BEGIN { printf "%.2f", mb * 1e6 * g / (bw * 1e9) }')
  printf "%-4s %14s %16s %16s %12s %14s\n" "$r" "$np" "$pre" "$gen" "$mb" "$frac"
done
