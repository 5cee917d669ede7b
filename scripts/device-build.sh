#!/usr/bin/env bash
# Release build into build/ on the GPU machine (sourced by device-check.sh and bench-gpu.sh, or run).
# That machine's image lacks the cJSON, libarchive and CUnit headers: they travel extracted under
# .device/fdeps (or .device/deps), an ignored folder named in the device call's `carry`.
# LG_BUILD_DIR: where to build (default build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/cuda/bin:$PATH"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
for d in .device/fdeps .device/deps; do
  if [ -d "$d/usr/include" ]; then
    deps=$PWD/$d/usr
    export CPATH="$deps/include${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    cmake_args+=(-DCMAKE_PREFIX_PATH="$deps")
    break
  fi
done
# NCCL (tensor parallelism): the CUDA toolkit's, else the nvidia-nccl Python package's (the device
# image has it there); NVLink multicast stays off on these machines whatever starts NCCL
export NCCL_NVLS_ENABLE=0
if [ -z "${NCCL_ROOT:-}" ] && [ ! -f /usr/local/cuda/include/nccl.h ]; then
  nccl=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
  if [ -n "$nccl" ] && [ -f "$nccl/include/nccl.h" ]; then
    export NCCL_ROOT=$nccl
    export LD_LIBRARY_PATH="$nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
t0=$(date +%s)
B=${LG_BUILD_DIR:-build}
mkdir -p "$B"
cmake -S . -B "$B" "${cmake_args[@]}" > "$B/device-build.log" 2>&1 || { cat "$B/device-build.log"; exit 1; }
# the tools only: lg-tests is CI's (CUnit's macros warn under the device image's newer gcc)
targets=(lg-convert lg-unpack lg-eval lg-run lg-bench)
grep -q "CUDA: building kernels" "$B/device-build.log" && targets+=(lg-kernel-check)
cmake --build "$B" -j"$(nproc)" --target "${targets[@]}" >> "$B/device-build.log" 2>&1 || { grep -E "error|Error" "$B/device-build.log" | head -40; tail -20 "$B/device-build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s, $(grep -c "CUDA: building kernels" "$B/device-build.log") CUDA; $(grep -o "NCCL: .*" "$B/device-build.log")"
missing=$(ldd "$B/lg-eval" | grep "not found" || true)
[ -z "$missing" ] || { echo "lg-eval: missing libraries: $missing"; exit 1; }
