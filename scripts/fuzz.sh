#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c: one per parser) with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer into build-fuzz/, and runs each for SECONDS, FUZZ_JOBS at a time.
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]      (default: 60 seconds, every harness)
#   FUZZ_JOBS=2 (parallel harnesses)  FUZZ_ARGS="..." (extra libFuzzer flags; a flag given twice:
#   the last one counts)  FUZZ_OUT=DIR (build and corpus directory, default build-fuzz)
#   FUZZ_SANITIZE=undefined (sanitizers of the build, default address,undefined: see
#   docs/RELIABILITY.md for the one long run made without AddressSanitizer)
#
# Seeds: tests/fuzz/seeds/NAME plus the fixtures' small JSON files (../shared/fixtures or
# $LG_FIXTURES), copied at run time; the package harness's seeds are packages lg-pack makes at run
# time (below). The corpus grows in build-fuzz/corpus/NAME and is reused by the next run; logs are
# in build-fuzz/logs/NAME.log. A crash leaves its input in build-fuzz/artifacts/ (replay:
# build-fuzz/NAME FILE) and makes the script exit 1.
set -euo pipefail
{ # read whole before running: editing this file during a long run does not disturb it
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
jobs=${FUZZ_JOBS:-2}
fixtures=${LG_FIXTURES:-../shared/fixtures}
out=${FUZZ_OUT:-build-fuzz}

all=()
for src in tests/fuzz/fuzz_*.c; do
  n=$(basename "$src" .c)
  all+=("${n#fuzz_}")
done
names=("$@")
((${#names[@]})) || names=("${all[@]}")

command -v clang > /dev/null || { echo "fuzz.sh: clang not found (apt-get install clang)"; exit 1; }
mkdir -p "$out"
CC=clang cmake -S . -B "$out" -DLG_FUZZ=ON -DLG_FUZZ_SANITIZE="${FUZZ_SANITIZE:-address,undefined}" \
  -DLG_NO_CUDA=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" > "$out/build.log" 2>&1 ||
  { cat "$out/build.log"; exit 1; }
targets=("${names[@]/#/fuzz_}")
[[ " ${names[*]} " == *" package "* ]] && targets+=(lg-convert lg-pack) # its seeds, below
cmake --build "$out" -j"$(nproc)" --target "${targets[@]}" >> "$out/build.log" 2>&1 ||
  { tail -50 "$out/build.log"; exit 1; }

# ---- seeds: the committed ones plus small files from the fixtures
rm -rf "$out/seeds"
for n in "${names[@]}"; do
  mkdir -p "$out/seeds/$n" "$out/corpus/$n" "$out/artifacts" "$out/logs"
  [ -d "tests/fuzz/seeds/$n" ] && cp tests/fuzz/seeds/"$n"/* "$out/seeds/$n/"
done
seed_from() { # NAME FILE...: copies fixture files that exist, named after their folder
  local n=$1 f
  shift
  [ -d "$out/seeds/$n" ] || return 0
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "$out/seeds/$n/$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  return 0
}
seed_from config "$fixtures"/*/config.json "$fixtures"/configs/*.json models/*/config.json
seed_from index "$fixtures"/*/model.safetensors.index.json
seed_from plan "$fixtures"/*/longgen_plan.json models/*/longgen_plan.json
# real Hugging Face headers (the data is cut at max_len: the fuzzer learns the header)
seed_from safetensors "$fixtures"/tiny-llama-fp16/model-00001-of-00010.safetensors

# Packages: a 2-layer LongGen model (hidden 16, vocab 64, 2 shards + index) made by lg-convert synth
# and lg-convert, with two small text files of the fixtures, packed by lg-pack with byte planes and
# with plain zstd (26 KB each). A fixture's own model is not a seed: the smallest (stories260K)
# packs to ~1 MB, and every execution hashes and decodes all of it.
package_seeds() {
  local t=$out/package-model
  rm -rf "$t" && mkdir -p "$t"
  ASAN_OPTIONS=detect_leaks=0 "$out/lg-convert" synth -o "$t/synth" --shape tiny --layers 2 --hidden 16 \
    --intermediate 32 --heads 2 --kv-heads 1 --vocab 64 --shards 2 > "$t/log" 2>&1 &&
    ASAN_OPTIONS=detect_leaks=0 "$out/lg-convert" "$t/synth" -o "$t/model" --full-layers 1 \
      --sparse sink_window:sink=4,window=16 --max-context 256 --shard-size 0.00001 -q >> "$t/log" 2>&1 ||
    { cat "$t/log"; return 1; }
  for f in "$fixtures"/tiny-llama-fp16/generation_config.json "$fixtures"/kjv-tiny-longgen/tokenizer_config.json; do
    [ -f "$f" ] && cp "$f" "$t/model/"
  done
  ASAN_OPTIONS=detect_leaks=0 "$out/lg-pack" "$t/model" -o "$out/seeds/package/tiny.lgpkg" -q >> "$t/log" 2>&1 &&
    ASAN_OPTIONS=detect_leaks=0 "$out/lg-pack" "$t/model" -o "$out/seeds/package/tiny-zstd.lgpkg" \
      --no-byte-planes -q >> "$t/log" 2>&1 || { cat "$t/log"; return 1; }
}
if [ -d "$out/seeds/package" ]; then
  package_seeds || exit 1
fi

max_len() {
  case $1 in
    safetensors | tokenizer_*) echo 16384 ;;
    package) echo 65536 ;; # the seeds are 26 KB
    byteplane) echo 4096 ;; # each input is also compressed: keep it quick
    *) echo 8192 ;;
  esac
}
dict() {
  case $1 in
    tokenizer_model) echo -dict=tests/fuzz/sentencepiece.dict ;;
    byteplane) ;;
    *) echo -dict=tests/fuzz/json.dict ;;
  esac
}

run_one() {
  local n=$1 rc=0
  # -rss_limit_mb also bounds every single allocation: a parser that believes a size it was given
  # shows as an out-of-memory crash
  "$out/fuzz_$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$n")" \
    $(dict "$n") -artifact_prefix="$out/artifacts/$n-" -print_final_stats=1 ${FUZZ_ARGS:-} \
    "$out/corpus/$n" "$out/seeds/$n" > "$out/logs/$n.log" 2>&1 || rc=$?
  echo $rc > "$out/logs/$n.rc"
}

running=0
for n in "${names[@]}"; do
  run_one "$n" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

status=0
printf '%-18s %12s %8s %10s %8s  %s\n' harness executions seconds exec/s corpus result
for n in "${names[@]}"; do
  log=$out/logs/$n.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  corpus=$(find "$out/corpus/$n" -type f | wc -l)
  rc=$(cat "$out/logs/$n.rc")
  result=ok
  if [ "$rc" = 72 ]; then # libFuzzer's status when interrupted (SIGINT, SIGTERM)
    result=interrupted
  elif [ "$rc" != 0 ]; then
    result="CRASH (exit $rc): $(grep -m1 -o 'Test unit written to .*' "$log" || echo "see $log")"
    status=1
  fi
  rate=-
  [ -n "$execs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ] && rate=$((execs / secs))
  printf '%-18s %12s %8s %10s %8s  %s\n' "$n" "${execs:--}" "${secs:--}" "$rate" "$corpus" "$result"
done
exit $status
}
