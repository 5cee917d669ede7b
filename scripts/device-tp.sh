#!/usr/bin/env bash
# Tensor parallelism on a machine with 2 or more GPUs (nvidia-h100-x2), correctness: for every
# fixture given (default: the four of .device/fx-a plus the bundled kjv-tiny-longgen; every one has
# heads and KV heads divisible by 2), converted as the test suite does,
#   1. `lg-eval reference` with --device cuda (one GPU, TP=1) on the fixture's reference input ids:
#      logits of every row, nll and a 32-token greedy continuation;
#   2. `lg-eval verify --tp 2` against that file: the TP=2 logits within 2e-3 (relative) of TP=1's,
#      every argmax and the greedy ids identical;
#   3. `lg-eval verify --tp 2` against the Hugging Face reference, as device-check.sh does for one GPU.
# Then the same on a 70B-width random checkpoint of 8 layers (lg-convert synth --shape 70b
# --layers 8), where GQA (64 query heads over 8 KV heads) is split for real, on 700 random ids: with
# every layer full, and with the middle third full and the others sink_window (sink 16, window 128)
# or block_strided (block 16, local 2, stride 4): windows short enough that 700 positions wrap the
# rings and skip blocks, so the sparse caches are exercised, split by head.
# A row passes when the TP=2 logits are within 2e-3 of TP=1's (relative: both are fp16 runs, whose
# products sum in another order) and the greedy ids are identical; argmax agreement over the
# teacher-forced rows is shown but not required (random weights give near-ties that either order of
# summation may break).
# usage: scripts/device-tp.sh [--no-70b | --70b DIR] [FIXTURE...]   (DIR: an existing synth 70b)
set -uo pipefail
cd "$(dirname "$0")/.."
big=1 s70b=""
case "${1:-}" in
  --no-70b) big=0; shift ;;
  --70b) s70b=$2; shift 2 ;;
esac
fixtures=("$@")
[ ${#fixtures[@]} -gt 0 ] || fixtures=(tiny-llama-fp16 stories260K kjv-pg-longgen kjv-tiny-longgen)
t_start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_start )) s] $*"; }
source scripts/device-build.sh
set +e
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
nvidia-smi topo -m 2>/dev/null | head -4
work=$(mktemp -d /tmp/lg-device-tp-XXXXXX)
trap 'rm -rf "$work"' EXIT
source scripts/device-fixtures.sh
status=0
rows=()

# tp_check NAME MODEL HF_REF|"" IDS_ARGS...: steps 1-3 above, one table row; $plan_args (an
# array, may be empty) go to every run
plan_args=()
tp_check() {
  local n=$1 model=$2 hf=$3
  shift 3
  local r1=$work/$n.tp1.safetensors t0 t1
  t0=$(date +%s.%N)
  "$B"/lg-eval reference "$model" -o "$r1" --device cuda "${plan_args[@]}" "$@" || { status=1; rows+=("| $n | reference failed | | |"); return; }
  t1=$(date +%s.%N)
  local vs1 vshf="n/a"
  vs1=$("$B"/lg-eval verify "$model" --reference "$r1" --device cuda --tp 2 --max-rel-err 2e-3 \
    "${plan_args[@]}" --json 2>&1 | tail -1)
  echo "$n: tp2 vs tp1: $vs1"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["rel_err"] <= 2e-3 and r["greedy_match"] else 1)' "$vs1" 2>/dev/null || status=1
  if [ -n "$hf" ]; then
    vshf=$("$B"/lg-eval verify "$model" --reference "$hf" --device cuda --tp 2 --json 2>&1 | tail -1)
    echo "$n: tp2 vs transformers: $vshf"
    case "$vshf" in *'"pass": true'*) ;; *) status=1 ;; esac
  fi
  rows+=("$(python3 - "$n" "$vs1" "$vshf" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')" <<'PY'
import json, sys
n, a, b, t = sys.argv[1:5]
def cell(s, tp_rule):
    try:
        r = json.loads(s)
    except ValueError:
        return f"error: {s[:80]}"
    g = {True: "identical", False: "DIFFERENT", None: "n/a"}[r.get("greedy_match")]
    ok = r["rel_err"] <= 2e-3 and r["greedy_match"] if tp_rule else r["pass"]
    return (f"rel {r['rel_err']:.2e}, max abs {r['max_abs_err']:.3g}, argmax "
            f"{100 * r['argmax_agree']:.1f}%, greedy {g}, {'PASS' if ok else 'FAIL'}")
print(f"| {n} | {cell(a, True)} | {cell(b, False) if b != 'n/a' else 'n/a'} | {t} s |")
PY
)")
}

for n in "${fixtures[@]}"; do
  stamp "== $n"
  if ! locate "$n"; then echo "$n: not found"; status=1; continue; fi
  convert_fixture "$n" "$work/$n" || { status=1; continue; }
  tp_check "$n" "$work/$n" "$ref" --ids-from "$ref" --greedy 32
done

if [ $big = 1 ]; then
  if [ -z "$s70b" ]; then
    stamp "== synth: 70B widths, 8 layers"
    s70b=$work/s70b
    "$B"/lg-convert synth -o "$s70b" --shape 70b --layers 8 --shards 2 || status=1
  fi
  stamp "== 70b-8l full"
  tp_check 70b-8l-full "$s70b" "" --random 700 --greedy 16
  for sp in '"kind": "sink_window", "sink": 16, "window": 128' \
            '"kind": "block_strided", "block": 16, "local": 2, "stride": 4'; do
    echo "{\"full_layers\": [3, 4, 5], \"sparse\": {$sp}}" > "$work/plan.json"
    plan_args=(--plan "$work/plan.json")
    kind=$(echo "$sp" | cut -d'"' -f4)
    stamp "== 70b-8l LongGen, $kind"
    tp_check "70b-8l-longgen-$kind" "$s70b" "" --random 700 --greedy 16
  done
  plan_args=()
fi

echo
echo "| model | TP=2 against TP=1 (same GPU type) | TP=2 against transformers | TP=1 reference run |"
echo "| --- | --- | --- | --- |"
for r in "${rows[@]}"; do echo "$r"; done
stamp "done, status $status"
exit $status
