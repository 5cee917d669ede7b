#!/usr/bin/env bash
# A change against the committed code, timed in one device call (the H100s of different calls differ
# by about 1% in decode): the working tree and a copy of REV (default HEAD, `git archive`, made here
# before the call: the device machine has the working tree, not the repository) are both built, then
# `scripts/bench-decode.sh LAYERS CTX` runs on each in turn, ROUNDS times (fp16, PDL on): the base
# first in each round. With no change the two columns differ by 0-0.7% (docs/BENCHMARKS.md, run 14).
#
# usage: scripts/bench-decode-ab.sh prepare [REV]     here: writes the copy to ab-base/ (untracked)
#        scripts/bench-decode-ab.sh run [ROUNDS] [LAYERS] [CTX]   on the device machine (3, 32, 4096)
#        scripts/bench-decode-ab.sh clean               here: removes ab-base/
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  rm -rf ab-base && mkdir ab-base && git archive "${2:-HEAD}" | tar -x -C ab-base || exit 1
  echo "ab-base/: $(git rev-parse --short "${2:-HEAD}")"
  ;;
clean)
  rm -rf ab-base
  ;;
run)
  rounds=${2:-3} layers=${3:-32} ctx=${4:-4096}
  [ -d ab-base ] || { echo "no ab-base/: run '$0 prepare' here first" >&2; exit 2; }
  ln -sfn ../.device ab-base/.device
  (source scripts/device-build.sh > /dev/null) || { echo "build of the working tree failed" >&2; exit 1; }
  (cd ab-base && source scripts/device-build.sh > /dev/null) || { echo "build of ab-base failed" >&2; exit 1; }
  echo "| round | tree | ms/token | % of the limit | copy GB/s |"
  echo "| --- | --- | --- | --- | --- |"
  for i in $(seq "$rounds"); do
    for v in base new; do
      d=.; [ $v = base ] && d=ab-base
      log=/tmp/lg-ab-$v$i.log
      (cd $d && LG_BENCH_WEIGHTS=fp16 LG_BENCH_PDL=1 LG_BENCH_DIR=/tmp/lg-ab-$v \
        bash scripts/bench-decode.sh "$layers" "$ctx" > "$log" 2>&1)
      row=$(grep "^| fp16 | on" "$log")
      ms=$(echo "$row" | cut -d'|' -f5 | tr -d ' ')
      pct=$(echo "$row" | cut -d'|' -f9 | sed 's/^ *//; s/ *$//')
      echo "| $i | $v | ${ms:-error} | ${pct:-see $log} | $(grep -o 'copy: [0-9.]*' "$log" | cut -d' ' -f2) |"
    done
  done
  ;;
*)
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
