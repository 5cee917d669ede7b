#!/usr/bin/env bash
# Tensor parallelism's speed, one device call on a machine with 2 GPUs (nvidia-h100-x2): a random
# checkpoint of Llama-2-70B's widths with 8 of its 80 layers (lg-convert synth --shape 70b --layers 8:
# hidden 8192, 64 query heads over 8 KV heads, MLP 28672, vocab 32000, fp16; 14.7 GB), timed by
# lg-bench with every layer full and in the LongGen layout (--plan: the middle third full, the others
# sink_window 64 + 4096, lg-convert's default), at 4K and 32K: prefill time, decode ms/token, memory
# of each GPU, with --tp 1, --tp 2, and --tp 2 --tp-no-comm (the all-reduces left out: the share of
# time spent in all-reduce is 1 - t(no comm) / t(TP=2)). Then the whole 80-layer 70B in LongGen
# layout at 128K, per GPU, by arithmetic (its 138 GB of weights do not fit this machine's disk).
# Before timing, scripts/device-tp.sh checks TP=2 against TP=1 on this checkpoint (full, sink_window,
# block_strided) and on kjv-pg-llama (.device/fx-b, carried with the call).
# usage: scripts/bench-tp.sh [CTX_LIST]     (default 4096,32768)
#   LG_TP_LAYOUTS="full longgen" (default both), LG_TP_CHECK=0 skips the correctness step; each
#   lg-bench has 150 s (LG_TP_TIMEOUT) and runs with LG_TP_TRACE=1, whose trace is shown if it stops.
set -uo pipefail
cd "$(dirname "$0")/.."
ctxs=${1:-4096,32768}
t_start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_start )) s] $*"; }
source scripts/device-build.sh
set +e
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
work=${LG_BENCH_DIR:-/tmp/lg-bench-tp}
rm -rf "$work"
mkdir -p "$work"
stamp "synth: 70B widths, 8 layers"
"$B"/lg-convert synth -o "$work/s70b" --shape 70b --layers 8 --shards 2 || exit 1
# correctness first, on this checkpoint and the fixture that travels with this call (fx-b)
if [ "${LG_TP_CHECK:-1}" != 0 ]; then
  LG_BUILD_DIR=$B scripts/device-tp.sh --70b "$work/s70b" kjv-pg-llama
fi
echo '{"full_layers": [3, 4, 5], "sparse": {"kind": "sink_window", "sink": 64, "window": 4096}}' \
  > "$work/longgen_plan.json"
for layout in ${LG_TP_LAYOUTS:-full longgen}; do
  plan=()
  [ $layout = longgen ] && plan=(--plan "$work/longgen_plan.json")
  for cfg in tp1 tp2 tp2-nocomm; do
    case $cfg in
      tp1) tp=(--tp 1) ;;
      tp2) tp=(--tp 2) ;;
      tp2-nocomm) tp=(--tp 2 --tp-no-comm) ;;
    esac
    stamp "lg-bench $layout $cfg"
    LG_TP_TRACE=1 timeout "${LG_TP_TIMEOUT:-150}" "$B"/lg-bench "$work/s70b" --device cuda \
      --ctx "$ctxs" --decode 32 "${plan[@]}" "${tp[@]}" 2> "$work/$layout-$cfg.trace" \
      | tee "$work/$layout-$cfg.jsonl"
    rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ]; then
      echo "lg-bench $layout $cfg: exit $rc; the last of its trace:"
      tail -25 "$work/$layout-$cfg.trace"
    fi
    grep -v '^\[tp ' "$work/$layout-$cfg.trace"
  done
done
if [ -n "${OUT:-}" ]; then cp "$work"/*.jsonl "$OUT"/ 2>/dev/null; fi
stamp "done"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
G = 1 << 30
def load(name):
    rows = {}
    try:
        for line in open(f"{work}/{name}.jsonl"):
            if line.startswith("{"):
                r = json.loads(line)
                rows[r["ctx"]] = r
    except OSError:
        pass
    return rows
print("\n| layout | context | prefill s TP=1 | prefill s TP=2 | prefill speedup | all-reduce share "
      "(prefill) | decode ms TP=1 | decode ms TP=2 | decode speedup | all-reduce share (decode) | "
      "GiB per GPU TP=1 | GiB per GPU TP=2 |")
print("| --- " * 12 + "|")
for layout in ("full", "longgen"):
    a, b, c = load(f"{layout}-tp1"), load(f"{layout}-tp2"), load(f"{layout}-tp2-nocomm")
    for ctx in sorted(a):
        r1, r2, r0 = a[ctx], b.get(ctx), c.get(ctx)
        if not r1.get("fits") or not r2 or not r2.get("fits"):
            print(f"| {layout} | {ctx} | {r1.get('error', '')} | {r2 and r2.get('error', '')} |")
            continue
        sh_p = sh_d = "n/a"
        if r0 and r0.get("fits"):
            sh_p = f"{100 * (1 - r0['prefill_s'] / r2['prefill_s']):.1f}%"
            sh_d = f"{100 * (1 - r0['decode_ms'] / r2['decode_ms']):.1f}%"
        g1 = ", ".join(f"{x / G:.2f}" for x in r1["gpu_peak"])
        g2 = ", ".join(f"{x / G:.2f}" for x in r2["gpu_peak"])
        print(f"| {layout} | {ctx} | {r1['prefill_s']:.3f} | {r2['prefill_s']:.3f} | "
              f"{r1['prefill_s'] / r2['prefill_s']:.2f}x | {sh_p} | {r1['decode_ms']:.3f} | "
              f"{r2['decode_ms']:.3f} | {r1['decode_ms'] / r2['decode_ms']:.2f}x | {sh_d} | {g1} | {g2} |")

# The whole Llama-2-70B (80 layers) in LongGen layout at 128K, fp16, per GPU, by arithmetic with the
# engine's own cache rules (forward_cuda.h): full layers a slot per position, sink_window layers
# sink + window - 1 + 256 (the step rows) slots; weights and KV split by head over the GPUs, the
# embedding and lm_head by vocabulary, norms on every GPU.
L, d, ffn, V, hq, hkv, hd = 80, 8192, 28672, 32000, 64, 8, 128
full_layers = round(L / 3)
ctx, sink, window, step = 131072, 64, 4096, 256
per_layer = 2 * (d * hq * hd + 2 * d * hkv * hd + hq * hd * d + 3 * d * ffn)
weights = L * per_layer + 2 * (2 * V * d) + 2 * d * (2 * L + 1)
kv_row = 2 * 2 * hkv * hd  # K and V, fp16, all KV heads
kv_full = full_layers * ctx * kv_row
kv_sparse = (L - full_layers) * (sink + window - 1 + step) * kv_row
print(f"\nLlama-2-70B, 80 layers, LongGen layout ({full_layers} full, {L - full_layers} sink_window "
      f"{sink}+{window}), {ctx // 1024}K, fp16:")
print("| GPUs | weights GiB per GPU | KV GiB per GPU (full + sparse) | KV if every layer were full, "
      "per GPU | weights + KV per GPU | fits an 80 GB H100 (75 GiB, ~4 GiB left for activations)? |")
print("| --- | --- | --- | --- | --- | --- |")
for tp in (1, 2, 4, 8):
    w = weights / tp / G
    kv = (kv_full + kv_sparse) / tp / G
    kv_all_full = L * ctx * kv_row / tp / G
    tot = w + kv
    print(f"| {tp} | {w:.1f} | {kv:.2f} ({kv_full / tp / G:.2f} + {kv_sparse / tp / G:.2f}) | "
          f"{kv_all_full:.1f} | {tot:.1f} | {'yes' if tot < 75 else 'no'} |")
PY
