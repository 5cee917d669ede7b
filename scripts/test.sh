#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CUnit suite (Release), then every
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer, then each fuzz harness briefly.
# Fixtures are read from ../shared/fixtures (or $LG_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
status=0
./build/lg-tests || status=1

echo "== sanitizer build (address, undefined): every suite"
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
# -O1 as AddressSanitizer's documentation advises: at -O0 the forward-pass suites take 6x longer
# (forward_cpu 853 s instead of 134 s here); asserts stay on (no NDEBUG)
# and without NCCL: the runtime must build (and refuse --tp > 1 with a reason) where NCCL is absent
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DLG_SANITIZE=ON -DLG_NO_NCCL=ON \
  > build-asan.log 2>&1 || { cat build-asan.log; exit 1; }
cmake --build build-asan -j"$(nproc)" --target lg-tests lg-convert lg-pack lg-unpack lg-verify lg-eval lg-run \
  >> build-asan.log 2>&1 || { tail -50 build-asan.log; exit 1; }
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./build-asan/lg-tests || status=1

# each libFuzzer harness (tests/fuzz) for a short bounded time; longer runs: docs/RELIABILITY.md
if command -v clang > /dev/null; then
  echo "== fuzz: every harness for 20 s, 2 at a time"
  FUZZ_JOBS=2 scripts/fuzz.sh 20 || status=1
fi
exit $status
