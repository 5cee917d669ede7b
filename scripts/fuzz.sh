#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c: one per parser) with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer into build-fuzz/, and runs each for SECONDS, FUZZ_JOBS at a time.
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]      (default: 60 seconds, every harness)
#   FUZZ_JOBS=2 (parallel harnesses)  FUZZ_ARGS="..." (extra libFuzzer flags)
#
# Seeds: tests/fuzz/seeds/NAME plus the fixtures' small JSON files (../shared/fixtures or
# $LG_FIXTURES), copied at run time. The corpus grows in build-fuzz/corpus/NAME and is reused by the
# next run; logs are in build-fuzz/logs/NAME.log. A crash leaves its input in
# build-fuzz/artifacts/ (replay: build-fuzz/NAME FILE) and makes the script exit 1.
set -euo pipefail
{ # read whole before running: editing this file during a long run does not disturb it
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
jobs=${FUZZ_JOBS:-2}
fixtures=${LG_FIXTURES:-../shared/fixtures}
out=build-fuzz

all=()
for src in tests/fuzz/fuzz_*.c; do
  n=$(basename "$src" .c)
  all+=("${n#fuzz_}")
done
names=("$@")
((${#names[@]})) || names=("${all[@]}")

command -v clang > /dev/null || { echo "fuzz.sh: clang not found (apt-get install clang)"; exit 1; }
mkdir -p "$out"
CC=clang cmake -S . -B "$out" -DLG_FUZZ=ON -DLG_NO_CUDA=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" > "$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
cmake --build "$out" -j"$(nproc)" --target "${names[@]/#/fuzz_}" >> "$out/build.log" 2>&1 ||
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

max_len() {
  case $1 in
    safetensors | tokenizer_*) echo 16384 ;;
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
