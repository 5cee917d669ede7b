#!/usr/bin/env bash
# Times lg-pack, lg-verify and lg-unpack, and measures package sizes with and without byte planes:
#   1. kjv-pg-llama (../shared/fixtures, fp16, 42 MB) converted by lg-convert (layers 2-3 full, the
#      others sink 16 + window 256), at zstd level 3 (the default) and 19;
#   2. a synthetic Llama-2-7B-shaped checkpoint (`lg-convert synth --shape 7b --shards 2`: random fp16
#      weights, 13.5 GB), only when DIR has more than 40 GB free (source 13.5 GB + the compressed
#      members lg-pack stages beside the package + the package, then the unpacked copy), in fp16
#      and converted to q4 (lg-convert --quant q4).
# For each run: wall time, output size, throughput and peak resident memory (/usr/bin/time -v), as
# markdown tables for docs/BENCHMARKS.md.
#
# usage: scripts/bench-pack.sh [--bin DIR] [--dir DIR] [--keep] [--skip-7b]
#   --bin DIR   where lg-convert, lg-pack, lg-unpack and lg-verify are (default build)
#   --dir DIR   scratch space (default /tmp)
#   --keep      leave the checkpoints and packages in DIR
#   --skip-7b   only the kjv-pg-llama part
set -euo pipefail
cd "$(dirname "$0")/.."

bin=build
base=/tmp
keep=0
skip7b=0
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift ;;
    --dir) base=$2; shift ;;
    --keep) keep=1 ;;
    --skip-7b) skip7b=1 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench-pack: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "bench-pack: $*" >&2; exit 1; }
for t in lg-convert lg-pack lg-unpack lg-verify; do
    [ -x "$bin/$t" ] || die "$bin/$t not found (scripts/build.sh)"
done
if [ ! -x /usr/bin/time ]; then
    apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; } ||
        die "cannot install the 'time' package"
fi
fixtures=${LG_FIXTURES:-../shared/fixtures}
[ -d "$fixtures/kjv-pg-llama" ] || die "$fixtures/kjv-pg-llama not found"

work=$(mktemp -d "$base/lg-bench-pack.XXXXXX")
cleanup() { [ $keep = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

bytes_of() { du -sb --apparent-size "$1" | cut -f1; }

# The table is printed as the runs finish (a run cut short by a time limit keeps the rows before it).
header_done=0
row() {
    if [ $header_done = 0 ]; then
        echo "| run | wall s | input MB | output MB | *.safetensors MB: original -> stored (ratio) | MB/s of input | peak RSS MB | load at start |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        header_done=1
    fi
    echo "$1"
}

# one timed command: name, input bytes (for the throughput), output path (file or dir), command...
timed() {
    local name=$1 in_bytes=$2 out=$3
    shift 3
    local tlog=$work/time.log load
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -v -o "$tlog" "$@" >"$work/cmd.log" 2>&1 || { cat "$work/cmd.log" >&2; die "$name failed: $*"; }
    local wall rss out_bytes=0
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0;
                for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$tlog")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tlog")
    [ -e "$out" ] && out_bytes=$(bytes_of "$out")
    # lg-pack's summary: "(tensor files 42.3 MB -> 35.2 MB, 0.833 of their size)"
    local tensors
    tensors=$(sed -n 's/.*(tensor files \([0-9.]*\) MB -> \([0-9.]*\) MB, \([0-9.]*\) of their size).*/\1 -> \2 MB (\3)/p' \
        "$work/cmd.log")
    row "$(awk -v n="$name" -v w="$wall" -v i="$in_bytes" -v o="$out_bytes" -v r="$rss" -v l="$load" \
        -v t="${tensors:--}" 'BEGIN { printf "| %s | %.2f | %.1f | %s | %s | %.0f | %.0f | %s |", n, w, i / 1e6,
                 (o > 0 ? sprintf("%.1f", o / 1e6) : "-"), t, i / 1e6 / w, r / 1024, l }')"
    echo "bench-pack: $name: ${wall}s" >&2
}

tensor_bytes() { cat "$1"/*.safetensors | wc -c; }

echo "bench-pack: converting kjv-pg-llama" >&2
kjv=$work/kjv-pg-longgen
"$bin/lg-convert" "$fixtures/kjv-pg-llama" -o "$kjv" --full-layers 2,3 \
    --sparse sink_window:sink=16,window=256 -q
kin=$(bytes_of "$kjv")
timed "kjv: lg-pack (level 3)" "$kin" "$work/kjv.lgpkg" "$bin/lg-pack" "$kjv" -o "$work/kjv.lgpkg"
timed "kjv: lg-pack (level 3, no byte planes)" "$kin" "$work/kjv-plain.lgpkg" \
    "$bin/lg-pack" "$kjv" -o "$work/kjv-plain.lgpkg" --no-byte-planes
timed "kjv: lg-pack (level 19)" "$kin" "$work/kjv19.lgpkg" "$bin/lg-pack" "$kjv" -o "$work/kjv19.lgpkg" --level 19
timed "kjv: lg-pack (level 19, no byte planes)" "$kin" "$work/kjv19-plain.lgpkg" \
    "$bin/lg-pack" "$kjv" -o "$work/kjv19-plain.lgpkg" --level 19 --no-byte-planes
timed "kjv: lg-verify" "$(bytes_of "$work/kjv.lgpkg")" "" "$bin/lg-verify" -q "$work/kjv.lgpkg"
timed "kjv: lg-unpack" "$(bytes_of "$work/kjv.lgpkg")" "$work/kjv-unpacked" \
    "$bin/lg-unpack" -q "$work/kjv.lgpkg" -o "$work/kjv-unpacked"
diff -r "$kjv" "$work/kjv-unpacked" >/dev/null || die "kjv: the unpacked tree differs"
kjv_tensors=$(tensor_bytes "$kjv")

big_note="7B: skipped (--skip-7b)"
if [ $skip7b = 0 ]; then
    avail_gb=$(df -P -BG "$base" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
    if [ "$avail_gb" -gt 40 ]; then
        echo "bench-pack: generating the synthetic 7B ($avail_gb GB free in $base)" >&2
        src=$work/synth-7b
        timed "7B: lg-convert synth (random fp16)" 13476831232 "$src" \
            "$bin/lg-convert" synth -o "$src" --shape 7b --shards 2
        sin=$(bytes_of "$src")
        sync
        timed "7B: lg-pack (level 3)" "$sin" "$work/7b.lgpkg" "$bin/lg-pack" "$src" -o "$work/7b.lgpkg"
        timed "7B: lg-verify" "$(bytes_of "$work/7b.lgpkg")" "" "$bin/lg-verify" -q "$work/7b.lgpkg"
        timed "7B: lg-unpack" "$(bytes_of "$work/7b.lgpkg")" "$work/7b-unpacked" \
            "$bin/lg-unpack" -q "$work/7b.lgpkg" -o "$work/7b-unpacked"
        cmp "$src/model-00001-of-00002.safetensors" "$work/7b-unpacked/model-00001-of-00002.safetensors" ||
            die "7B: the unpacked shard differs"
        rm -rf "$work/7b-unpacked" "$work/7b.lgpkg"
        # last, with the package gone: at most source + staged members + package on disk
        timed "7B: lg-pack (level 3, no byte planes)" "$sin" "$work/7b-plain.lgpkg" \
            "$bin/lg-pack" "$src" -o "$work/7b-plain.lgpkg" --no-byte-planes
        rm -f "$work/7b-plain.lgpkg"
        # q4 (lg-convert --quant q4: int4 groups of 64 with F16 scales and mins)
        timed "7B: lg-convert --quant q4" "$sin" "$work/7b-q4" "$bin/lg-convert" "$src" -o "$work/7b-q4" \
            --rope keep --quant q4 -q
        qin=$(bytes_of "$work/7b-q4")
        timed "7B q4: lg-pack (level 3)" "$qin" "$work/7b-q4.lgpkg" "$bin/lg-pack" "$work/7b-q4" -o "$work/7b-q4.lgpkg"
        timed "7B q4: lg-verify" "$(bytes_of "$work/7b-q4.lgpkg")" "" "$bin/lg-verify" -q "$work/7b-q4.lgpkg"
        rm -rf "$work/7b-q4" "$work/7b-q4.lgpkg"
        big_note="7B: $src, $((sin / 1000000)) MB"
    else
        big_note="7B: skipped, $avail_gb GB free in $base (needs more than 40)"
    fi
fi

echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GB RAM; kjv-pg-llama converted: $((kin / 1000)) kB ($((kjv_tensors / 1000)) kB of safetensors); $big_note"
