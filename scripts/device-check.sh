#!/usr/bin/env bash
# The CUDA path, on the GPU machine: builds (scripts/device-build.sh), runs every kernel against its
# CPU twin (lg-kernel-check), then converts each fixture as the test suite does (--rope keep; the
# LongGen ones with their longgen_plan.json, the others with --full-layers all) and runs
# `lg-eval verify` on it with --device cpu and --device cuda. A fixture passes when the CUDA logits
# are within 2e-3 (relative, fp16 weights and activations) of the float32 reference, every argmax
# agrees and the greedy ids are identical to the reference's, which are the CPU path's (the CPU
# verify, run beside it, shows them identical). Once, the safetensors library (python3) opens every
# file lg-convert wrote.
#
# usage: scripts/device-check.sh [--no-kernels] [FIXTURE...]   (default: the five fixtures)
# A fixture is a directory NAME in $LG_FIXTURES, ../shared/fixtures or models/, or a package
# .device/fx-*/NAME.lgpkg (lg-pack) with NAME.reference.safetensors and NAME.longgen_plan.json
# beside it: what travels to the device machine, where ../shared does not.
set -uo pipefail
cd "$(dirname "$0")/.."
kernels=1
[ "${1:-}" = "--no-kernels" ] && { kernels=0; shift; }
fixtures=("$@")
[ ${#fixtures[@]} -gt 0 ] || fixtures=(tiny-llama-fp16 stories260K kjv-pg-llama kjv-pg-longgen kjv-tiny-longgen)
source scripts/device-build.sh
set +e
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
if [ $kernels = 1 ]; then
  echo "== lg-kernel-check"
  "$B"/lg-kernel-check || status=1
fi

work=$(mktemp -d /tmp/lg-device-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
source scripts/device-fixtures.sh

rows=()
notes=()
checked_st=0
for n in "${fixtures[@]}"; do
  echo "== $n"
  if ! locate "$n"; then
    echo "$n: not found (neither a fixture directory nor a .device/fx-*/$n.lgpkg)"
    status=1
    continue
  fi
  out=$work/$n
  convert_fixture "$n" "$out" || { status=1; continue; }
  if [ $checked_st = 0 ] && command -v python3 > /dev/null; then
    checked_st=1
    python3 - "$out" <<'EOF' || status=1
import glob, sys
from safetensors import safe_open
files = sorted(glob.glob(sys.argv[1] + "/*.safetensors"))
n = 0
for path in files:
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            n += 1
print(f"safetensors {__import__('safetensors').__version__}: lg-convert's {len(files)} file(s), "
      f"{n} tensors, all opened and read with safe_open")
EOF
  fi
  cpu=$("$B"/lg-eval verify "$out" --reference "$ref" --device cpu --json 2>&1 | tail -1)
  t0=$(date +%s.%N)
  cuda=$("$B"/lg-eval verify "$out" --reference "$ref" --device cuda --json 2>&1 | tail -1)
  t1=$(date +%s.%N)
  echo "cpu:  $cpu"
  echo "cuda: $cuda ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s)"
  case "$cuda" in *'"pass": true'*) ;; *) status=1 ;; esac
  rows+=("$n|$cpu|$cuda")
  # a float32 checkpoint loses precision to fp16 weights alone: show what the float32 CPU path gives
  # on the same weights rounded to fp16 (the GPU's floor), for the reader; the verdict stays
  if "$B"/lg-convert inspect "$src" | grep -q "^weights .* F32$"; then
    "$B"/lg-convert "$src" -o "$out.f16" -q --rope keep --dtype f16 "${how[@]}" &&
      notes+=("$n: float32 weights; the float32 CPU path on them rounded to fp16: $("$B"/lg-eval \
        verify "$out.f16" --reference "$ref" --device cpu --json 2>&1 | tail -1)")
  fi
done

echo
echo "| fixture | cpu rel_err | cuda rel_err | cuda max_abs | argmax | greedy (cuda) | ppl cpu / cuda / ref | cuda verify |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for r in "${rows[@]}"; do
  IFS='|' read -r n cpu cuda <<< "$r"
  python3 - "$n" "$cpu" "$cuda" <<'EOF'
import json, sys
n, cpu, cuda = sys.argv[1:4]
def parse(s):
    try:
        return json.loads(s)
    except ValueError:
        return None
c, g = parse(cpu), parse(cuda)
if g is None:
    print(f"| {n} | {c['rel_err'] if c else cpu} | error: {cuda} | | | | | FAIL |")
elif c is None:
    print(f"| {n} | error: {cpu} | {g['rel_err']:.2e} | | | | | {'PASS' if g['pass'] else 'FAIL'} |")
else:
    ppl = f"{c['ppl']:.4f} / {g['ppl']:.4f} / {g['ref_ppl']:.4f}" if c else f"{g['ppl']:.4f}"
    greedy = {True: "identical", False: "DIFFERENT", None: "n/a"}[g["greedy_match"]]
    print(f"| {n} | {c['rel_err']:.2e} | {g['rel_err']:.2e} | {g['max_abs_err']:.3g} | "
          f"{100 * g['argmax_agree']:.1f}% | {greedy} | {ppl} | {'PASS' if g['pass'] else 'FAIL'} |")
EOF
done
for note in "${notes[@]}"; do echo; echo "$note"; done
exit $status
