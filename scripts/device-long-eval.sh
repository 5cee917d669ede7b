#!/usr/bin/env bash
# lg-eval needle and passkey with --device cuda at 4K-128K, in one device call: a random-weight
# checkpoint of Llama-2-7B's exact shapes (lg-convert synth --shape 7b), converted to LongGen with the
# default plan and RoPE (layers 10-20 full, the others sink_window 64 + 4096; theta 5e6 and
# max_position_embeddings 131072, so 128K is within the model's context), the Llama-2 tokenizer put
# beside it; then the needle grid (lengths x depths) and the pass key (a few trials per length).
# Random weights score 0: the run times each cell and shows the machinery working at 128K on the GPU.
#
# usage: scripts/device-long-eval.sh [--dry-run]
#   --dry-run   the same steps on this machine: --shape tiny (with the Llama-2 vocabulary), --device
#               cpu, lengths 1k,2k, one trial; uses the build in $LG_BUILD_DIR (default build)
# Environment: LG_LONG_LENGTHS (default 4k,16k,32k,64k,128k), LG_LONG_DEPTHS (default 0,50,100),
# LG_LONG_TRIALS (default 2; fewer when the needle grid shows they would end past LG_LONG_BUDGET_S,
# default 360 s from the start), LG_LONG_DIR (scratch, default /tmp/lg-long-eval), LG_BUILD_DIR.
# The tokenizer and the haystack come from .device/longeval/{tokenizer.model,pg-essays/} (an ignored
# folder that travels with the device call's carry), else from $LG_FIXTURES or ../shared/fixtures.
# Writes needle.json, needle.svg, needle.log, passkey.json and summary.md into WORK/results and
# copies them to $OUT when that is set. About 4-5 minutes on one H100, the build included.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
[ "${1:-}" = "--dry-run" ] && { dry=1; shift; }
[ $# -eq 0 ] || { echo "usage: scripts/device-long-eval.sh [--dry-run]" >&2; exit 2; }
t_start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_start )) s] $*"; }

if [ $dry = 1 ]; then
  shape=tiny device=cpu
  lengths=${LG_LONG_LENGTHS:-1k,2k} depths=${LG_LONG_DEPTHS:-0,50,100} trials=${LG_LONG_TRIALS:-1}
  B=${LG_BUILD_DIR:-build}
  [ -f "$B/CMakeCache.txt" ] || { echo "no build in $B: run scripts/build.sh or set LG_BUILD_DIR" >&2; exit 1; }
  cmake --build "$B" -j2 --target lg-convert lg-eval > /dev/null || exit 1
else
  shape=7b device=cuda
  lengths=${LG_LONG_LENGTHS:-4k,16k,32k,64k,128k} depths=${LG_LONG_DEPTHS:-0,50,100} trials=${LG_LONG_TRIALS:-2}
  source scripts/device-build.sh
  set +e
  B=${LG_BUILD_DIR:-build}
  grep -q "CUDA: building kernels" "$B/device-build.log" || { echo "this build has no CUDA (nvcc not found)"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

fixtures=${LG_FIXTURES:-../shared/fixtures}
tok=.device/longeval/tokenizer.model
[ -f "$tok" ] || tok=$fixtures/llama2-tokenizer/tokenizer.model
hay=.device/longeval/pg-essays
[ -d "$hay" ] || hay=$fixtures/text/pg-essays
for f in "$tok" "$hay"; do
  [ -e "$f" ] || { echo "missing $f: copy the fixtures' llama2-tokenizer/tokenizer.model and" \
                        "text/pg-essays into .device/longeval/" >&2; exit 1; }
done

work=${LG_LONG_DIR:-/tmp/lg-long-eval}
res=$work/results
rm -rf "$work"
mkdir -p "$res"
model=$work/longgen
stamp "synth --shape $shape"
synth_args=(--shape "$shape")
[ $shape = tiny ] && synth_args+=(--vocab 32000) # the tiny preset's vocabulary is 1024, Llama-2's 32000
"$B"/lg-convert synth -o "$work/synth" "${synth_args[@]}" || exit 1
stamp "convert to LongGen: default plan and RoPE"
"$B"/lg-convert "$work/synth" -o "$model" -q || exit 1
rm -rf "$work/synth" # two 13.5 GB copies are more than the run needs
cp "$tok" "$model/tokenizer.model"
"$B"/lg-convert inspect "$model" --context 131072 | head -12

# every length within the converted model's context: no "past max_position_embeddings" warning
max_pos=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_position_embeddings"])' \
  "$model/config.json")
longest=0
for n in ${lengths//,/ }; do
  case $n in *[kK]) n=$(( ${n%?} * 1024 ));; esac
  [ "$n" -gt "$longest" ] && longest=$n
done
echo "max_position_embeddings $max_pos, longest length $longest"
[ "$longest" -le "$max_pos" ] || { echo "length $longest is past the model's $max_pos positions" >&2; exit 1; }

status=0
stamp "needle --device $device --lengths $lengths --depths $depths (a line per cell: score, tokens, seconds)"
"$B"/lg-eval needle "$model" --device "$device" --haystack "$hay" --lengths "$lengths" --depths "$depths" \
  --json-out "$res/needle.json" --svg "$res/needle.svg" 2>&1 | tee "$res/needle.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# a pass-key trial costs about what a needle cell of each length does: fewer trials rather than pass
# the device call's limit (LG_LONG_BUDGET_S, default 360 s from the start, the build included)
budget=${LG_LONG_BUDGET_S:-360}
per_trial=$(python3 -c 'import json, sys; g = json.load(open(sys.argv[1]))
print(int(sum(c["seconds"] for c in g["cells"]) / len(g["depths"]) + 1))' "$res/needle.json" 2>/dev/null || echo 0)
while [ "$trials" -gt 1 ] && [ $(( $(date +%s) - t_start + trials * per_trial )) -gt "$budget" ]; do
  trials=$(( trials - 1 ))
  echo "passkey: $trials trial(s) per length, to stay within $budget s (about $per_trial s a trial)"
done
stamp "passkey --device $device --lengths $lengths --trials $trials"
"$B"/lg-eval passkey "$model" --device "$device" --lengths "$lengths" --trials "$trials" --seed 1 --json \
  > "$res/passkey.json" 2> "$res/passkey.err" || status=1
cat "$res/passkey.err"
stamp "done"
grep -h "warning" "$res/needle.log" "$res/passkey.err" && status=1

python3 - "$res" "$device" "$shape" > "$res/summary.md" <<'EOF' || status=1
import json, sys
res, device, shape = sys.argv[1:4]
g = json.load(open(f"{res}/needle.json"))
p = json.load(open(f"{res}/passkey.json"))
name = lambda n: f"{n // 1024}k" if n % 1024 == 0 else str(n)
print(f"synthetic {shape} (random weights), LongGen default plan, --device {device}\n")
print("needle: seconds per cell (haystack cut, prompt encoded, prefill, greedy answer) and prompt tokens\n")
print("| depth | " + " | ".join(name(n) for n in g["lengths"]) + " |")
print("| --- |" + " --- |" * len(g["lengths"]))
cells = {(c["depth"], c["length"]): c for c in g["cells"]}
for d in g["depths"]:
    row = [f"{cells[d, n]['seconds']:.2f} s ({cells[d, n]['prompt_tokens']})" for n in g["lengths"]]
    print(f"| {d:g}% | " + " | ".join(row) + " |")
print(f"\nmean score {g['mean_score']:.2f} over {len(g['cells'])} cells\n")
print("passkey: seconds per trial (prompt encoded, prefill, 6 answer tokens)\n")
print("| length | prompt tokens | trials | accuracy | seconds per trial |")
print("| --- | --- | --- | --- | --- |")
for r in p["results"]:
    print(f"| {name(r['length'])} | {r['prompt_tokens']} | {r['trials']} | {r['accuracy']:.2f} | "
          f"{r['seconds'] / r['trials']:.2f} |")
EOF
cat "$res/summary.md"
rm -f "$res/passkey.err"
if [ -n "${OUT:-}" ]; then cp "$res"/* "$OUT"/; fi
stamp "total"
exit $status
