#!/usr/bin/env bash
# Quantized weights on the GPU (issue 5), one device call after the build:
#   1. correctness: the bundled kjv-tiny-longgen converted with --quant q8, q4 (group 64, mins) and
#      fp8; `lg-eval reference --device cpu` (the CPU's quantized kernels, whose products equal the
#      float32 products of the dequantized weights) then `lg-eval verify --device cuda` against it:
#      the CUDA logits within 2e-3 (relative) and the greedy ids identical;
#   2. speed: a random checkpoint of Llama-2-7B's shapes (lg-convert synth --shape 7b --layers L,
#      default all 32) as fp16 and converted with --quant q8 and --quant q4, then lg-bench decode at a
#      1024-token context on each: ms/token, tokens/s, the speedup over fp16, and the rate against
#      the bandwidth limit (bytes read per token: every weight but the embedding table, plus the live
#      KV cache, over the device-to-device copy bandwidth measured in the same run).
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
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["rel_err"] <= 2e-3 and r["greedy_match"] else 1)' "$r" 2>/dev/null || status=1
done

stamp "== speed: 7B shapes, $layers layers"
"$B"/lg-convert synth -o "$work/s7b" --shape 7b --layers "$layers" || exit 1
for q in q8 q4; do
  stamp "convert --quant $q"
  "$B"/lg-convert "$work/s7b" -o "$work/s7b-$q" -q --rope keep --full-layers all --quant "$q" || status=1
done
bw=$(python3 scripts/copy_bw.py)
echo "device-to-device copy: $bw GB/s"
for q in fp16 q8 q4; do
  dir=$work/s7b-$q
  [ $q = fp16 ] && dir=$work/s7b
  stamp "lg-bench $q"
  timeout 180 "$B"/lg-bench "$dir" --device cuda --ctx 1024 --decode 64 | tee "$work/$q.jsonl"
done
[ -n "${OUT:-}" ] && cp "$work"/*.jsonl "$OUT"/ 2>/dev/null
python3 - "$work" "$bw" "$layers" <<'PY'
import json, sys
work, bw, layers = sys.argv[1], float(sys.argv[2] or 0), sys.argv[3]
rows = {}
for q in ("fp16", "q8", "q4"):
    try:
        rows[q] = [json.loads(l) for l in open(f"{work}/{q}.jsonl") if l.startswith("{")][0]
    except (OSError, IndexError):
        pass
print(f"\n7B shapes, {layers} layers, context 1024, decode median of 64 tokens; copy {bw:.0f} GB/s")
print("| weights | weight GB | ms/token | tokens/s | speedup over fp16 | bytes/token / copy bandwidth |")
print("| --- | --- | --- | --- | --- | --- |")
base = rows.get("fp16", {}).get("decode_ms")
for q, r in rows.items():
    if not r.get("fits"):
        print(f"| {q} | error: {r.get('error')} |")
        continue
    read = r["weights_bytes"] - r["embed_bytes"] + sum(r["kv_live"].values())
    limit_ms = read / (bw * 1e9) * 1e3 if bw else 0
    sp = f"{base / r['decode_ms']:.2f}x" if base else "n/a"
    print(f"| {q} | {r['weights_bytes'] / 1e9:.2f} | {r['decode_ms']:.3f} | {1e3 / r['decode_ms']:.1f} | "
          f"{sp} | {100 * limit_ms / r['decode_ms']:.1f}% ({limit_ms:.3f} ms) |")
PY
stamp "done, status $status"
exit $status
