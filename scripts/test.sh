#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CUnit suite (Release), then the
# parsers and converter again under AddressSanitizer + UndefinedBehaviorSanitizer.
# Fixtures are read from ../shared/fixtures (or $LG_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
status=0
./build/lg-tests || status=1

echo "== sanitizer build (address, undefined): parsers, converter, malformed inputs"
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLG_SANITIZE=ON > build-asan.log 2>&1 || { cat build-asan.log; exit 1; }
cmake --build build-asan -j"$(nproc)" --target lg-tests lg-convert lg-pack lg-unpack lg-verify lg-eval lg-run >> build-asan.log 2>&1 || { tail -50 build-asan.log; exit 1; }
suites=(dtype safetensors config convert)
for s in malformed tokenizer package fuzz_regressions; do
  grep -q "\"$s\"" tests/*.c && suites+=("$s")
done
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./build-asan/lg-tests "${suites[@]}" || status=1

# each libFuzzer harness (tests/fuzz) for a short bounded time; longer runs: docs/RELIABILITY.md
if command -v clang > /dev/null; then
  echo "== fuzz: every harness for 20 s, 2 at a time"
  FUZZ_JOBS=2 scripts/fuzz.sh 20 || status=1
fi
exit $status
