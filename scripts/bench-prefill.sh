#!/usr/bin/env bash
# Prefill attention against torch's scaled_dot_product_attention, in one device call: Llama-2-7B's
# attention layer (32 heads of 128, causal, batch 1) at 4K and 16K tokens in float16 and bfloat16,
# through the wgmma kernel (Hopper), the mma.sync kernel and torch (present on the device machine),
# plus the sparse masks and the wgmma kernel's two schedules. TFLOP/s = 4 * head_dim * heads *
# visible (query, key) pairs / time. Prints the raw lines, then a table whose ratio is torch's time
# over ours (above 1: ours is faster), both from this run on this GPU. bfloat16 on the wgmma kernel is
# timed with its workspace (V copied to float16 first, that copy included) and without (P split).
#
# usage: scripts/bench-prefill.sh            (builds first: scripts/device-build.sh)
#        scripts/bench-prefill.sh --table OURS_LOG SDPA_LOG   (only the table, from saved output)
set -uo pipefail
cd "$(dirname "$0")/.."

table() {
  python3 - "$1" "$2" <<'PY'
import re, sys
line = re.compile(r"BENCH (?:prefill (\w+)|sdpa)\s+(\w+) T\s+(\d+) heads \d+ hd \d+ (\S+)\s*:\s+([\d.]+) ms\s+([\d.]+) TFLOP/s")
ours, sdpa = {}, {}
for path, into in ((sys.argv[1], ours), (sys.argv[2], sdpa)):
    with open(path) as f:
        for l in f:
            if l.startswith("schedule:"):
                break  # the schedule sweep follows: the table takes the default choice
            m = line.search(l)
            if m:
                kern, dt, T, mask, ms, tf = m.groups()
                into.setdefault((dt, int(T), mask), {})[kern or "sdpa"] = (float(ms), float(tf))
print("| case | wgmma ms (TFLOP/s) | mma.sync ms (TFLOP/s) | wgmma, no workspace: P split | torch sdpa ms (TFLOP/s) | sdpa time / wgmma time |")
print("| --- | --- | --- | --- | --- | --- |")
for key in sorted(ours, key=lambda k: (k[2] != "full", k[0], k[1])):
    dt, T, mask = key
    r = ours[key]
    cell = lambda v: f"{v[0]:.3f} ({v[1]:.0f})" if v else "-"
    s = sdpa.get(key, {}).get("sdpa")
    w = r.get("wgmma")
    ratio = f"{s[0] / w[0]:.2f}x" if s and w else "-"
    print(f"| {dt} T {T} {mask} | {cell(w)} | {cell(r.get('mma'))} | {cell(r.get('wgmma_split'))} | {cell(s)} | {ratio} |")
PY
}

if [ "${1:-}" = "--table" ]; then
  table "$2" "$3"
  exit $?
fi

source scripts/device-build.sh
set +e
B=${LG_BUILD_DIR:-build}
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$B"/lg-kernel-check --bench-prefill | tee "$out/bench-prefill.log" || exit 1
python3 scripts/bench_sdpa.py | tee "$out/bench-sdpa.log" || exit 1
echo
table "$out/bench-prefill.log" "$out/bench-sdpa.log"
