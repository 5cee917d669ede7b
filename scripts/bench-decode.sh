#!/usr/bin/env bash
# Batch-1 decode against the bandwidth limit, one device call after the build: a random checkpoint
# of Llama-2-7B's shapes (lg-convert synth --shape 7b --layers L, default all 32; every layer full
# attention) as fp16 and converted with --quant q8 and --quant q4 (group 64, mins), then lg-bench
# decode at one context (default 4096) on each, with programmatic dependent launch off (LG_PDL=0)
# and on (the default on an H100/H200): ms/token, tokens/s, the speedup over fp16 with the same
# launch mode, and the rate against the bandwidth limit (bytes a token reads: every weight but the
# embedding table, plus the live KV cache, over the device-to-device copy bandwidth measured in the
# same run).
#
# usage: scripts/bench-decode.sh [LAYERS] [CTX]
# LG_BENCH_WEIGHTS="fp16 q8 q4" (which to run), LG_BENCH_PDL="0 1" (launch modes), LG_BENCH_DIR
# (scratch), $OUT (the JSON lines go there too). Prints a markdown table last.
set -uo pipefail
cd "$(dirname "$0")/.."
layers=${1:-32}
ctx=${2:-4096}
weights=${LG_BENCH_WEIGHTS:-fp16 q8 q4}
pdls=${LG_BENCH_PDL:-0 1}
t_start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_start )) s] $*"; }
source scripts/device-build.sh
set +e
work=${LG_BENCH_DIR:-/tmp/lg-bench-decode}
rm -rf "$work"
mkdir -p "$work"
status=0

stamp "synth: 7B shapes, $layers layers"
"$B"/lg-convert synth -o "$work/fp16" --shape 7b --layers "$layers" || exit 1
for q in $weights; do
  [ "$q" = fp16 ] && continue
  stamp "convert --quant $q"
  "$B"/lg-convert "$work/fp16" -o "$work/$q" -q --rope keep --full-layers all --quant "$q" || status=1
done
bw=$(python3 scripts/copy_bw.py)
echo "device-to-device copy: $bw GB/s"
for q in $weights; do
  for pdl in $pdls; do
    stamp "lg-bench $q LG_PDL=$pdl"
    LG_PDL=$pdl timeout 180 "$B"/lg-bench "$work/$q" --device cuda --ctx "$ctx" --decode 64 |
      tee "$work/$q.pdl$pdl.jsonl" || status=1
  done
done
[ -n "${OUT:-}" ] && cp "$work"/*.jsonl "$OUT"/ 2>/dev/null
python3 - "$work" "$bw" "$layers" "$ctx" "$weights" "$pdls" <<'PY'
import json, sys
work, bw, layers, ctx = sys.argv[1], float(sys.argv[2] or 0), sys.argv[3], sys.argv[4]
weights, pdls = sys.argv[5].split(), [int(p) for p in sys.argv[6].split()]
def row(q, pdl):
    try:
        return [json.loads(l) for l in open(f"{work}/{q}.pdl{pdl}.jsonl") if l.startswith("{")][0]
    except (OSError, IndexError, ValueError):
        return None
print(f"\n7B shapes, {layers} layers, context {ctx}, decode median of 64 tokens; copy {bw:.0f} GB/s")
print("| weights | PDL | weight GB | ms/token | tokens/s | speedup over fp16 (same PDL) | PDL gain | bytes/token / copy bandwidth |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for q in weights:
    for pdl in pdls:
        r = row(q, pdl)
        if not r or not r.get("fits"):
            print(f"| {q} | {pdl} | error: {r.get('error') if r else 'no result'} |")
            continue
        read = r["weights_bytes"] - r["embed_bytes"] + sum(r["kv_live"].values())
        limit_ms = read / (bw * 1e9) * 1e3 if bw else 0
        base = row("fp16", pdl)
        sp = f"{base['decode_ms'] / r['decode_ms']:.2f}x" if base and base.get("fits") else "n/a"
        off = row(q, 0)
        gain = f"{off['decode_ms'] / r['decode_ms']:.3f}x" if off and off.get("fits") else "n/a"
        print(f"| {q} | {'on' if pdl else 'off'} | {r['weights_bytes'] / 1e9:.2f} | {r['decode_ms']:.3f} | "
              f"{1e3 / r['decode_ms']:.1f} | {sp} | {gain} | {100 * limit_ms / r['decode_ms']:.1f}% ({limit_ms:.3f} ms) |")
PY
stamp "done, status $status"
exit $status
