#!/usr/bin/env bash
# The CUDA engine against the CPU engine (the oracle) on every attention pattern, on the GPU machine:
# the bundled kjv-tiny-longgen converted with its own plan and with layouts whose caches wrap on its
# reference input (every layer sink_window 4 + 64; every layer block_strided block 16, local 2,
# stride 4; half the layers full, the rest block_strided 8, 1, 3). For each: `lg-eval reference
# --device cpu` (float32 CPU path: logits, nll and 32 greedy ids of the reference's input ids) then
# `lg-eval verify --device cuda` against it: within 2e-3 relative, every argmax and the greedy ids
# identical. Last, the plan on a short prompt and a long generation (24 random ids, 700 greedy
# tokens): the decode then crosses the slot bounds 128, 256 and 512 of the engine's decode graphs,
# each launched for fewer slots than the caches hold. Exit 1 when any layout fails.
#
# usage: scripts/device-oracle.sh        (builds first: scripts/device-build.sh)
#        LG_PREBUILT=DIR scripts/device-oracle.sh   (lg-convert and lg-eval already built, in DIR)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${LG_PREBUILT:-}" ]; then
  B=$LG_PREBUILT
else
  source scripts/device-build.sh
fi
set +e
src=models/kjv-tiny-longgen
work=$(mktemp -d /tmp/lg-device-oracle-XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
ref_ids="--ids-from $src/reference.safetensors --greedy 32"
layouts=(
  "plan|--plan $src/longgen_plan.json|$ref_ids"
  "sink_window(4,64) everywhere|--full-layers none --sparse sink_window:sink=4,window=64|$ref_ids"
  "block_strided(16,2,4) everywhere|--full-layers none --sparse block_strided:block=16,local=2,stride=4|$ref_ids"
  "half full, block_strided(8,1,3)|--full-layers 0-2 --sparse block_strided:block=8,local=1,stride=3|$ref_ids"
  "plan, 24 ids + 700 greedy|--plan $src/longgen_plan.json|--random 24 --greedy 700"
)
echo "| layout | cuda vs cpu rel_err | max_abs | argmax | greedy | verdict |"
echo "| --- | --- | --- | --- | --- | --- |"
i=0
for entry in "${layouts[@]}"; do
  name=${entry%%|*}
  rest=${entry#*|}
  read -r -a how <<< "${rest%%|*}"
  read -r -a ref <<< "${rest#*|}"
  out=$work/m$i
  i=$((i + 1))
  if ! "$B"/lg-convert "$src" -o "$out" -q --rope keep "${how[@]}" ||
     ! "$B"/lg-eval reference "$out" -o "$out.cpu.safetensors" "${ref[@]}" --device cpu \
       2> "$out.log"; then
    echo "| $name | conversion or CPU reference failed: $(tail -1 "$out.log" 2>/dev/null) | | | | FAIL |"
    status=1
    continue
  fi
  r=$("$B"/lg-eval verify "$out" --reference "$out.cpu.safetensors" --device cuda --json 2>&1 | tail -1)
  python3 - "$name" "$r" <<'PY' || status=1
import json, sys
name, line = sys.argv[1], sys.argv[2]
try:
    r = json.loads(line)
except ValueError:
    print(f"| {name} | {line} | | | | FAIL |")
    sys.exit(1)
g = {True: "identical", False: "DIFFERENT", None: "n/a"}[r.get("greedy_match")]
print(f"| {name} | {r['rel_err']:.3g} | {r['max_abs_err']:.3g} | {100 * r['argmax_agree']:.1f}% | {g} | "
      f"{'PASS' if r['pass'] else 'FAIL'} |")
sys.exit(0 if r["pass"] else 1)
PY
done
exit $status
