#!/usr/bin/env bash
# Times lg-convert on a synthetic Llama-2-7B-shaped checkpoint (random weights, fp16, 2 shards,
# 13.5 GB): a warm-cache copy, a cold-cache copy and an f16 -> bf16 conversion. For each run it
# prints wall time, bytes written, GB/s and peak memory as a markdown table (docs/BENCHMARKS.md).
#
# usage: scripts/bench-convert.sh [--keep] [--bin PATH] [--dir DIR]
#   --keep      leave the synthetic source and the outputs in DIR (default: remove the outputs and
#               the source at the end)
#   --bin PATH  the lg-convert to time (default build/lg-convert)
#   --dir DIR   where the checkpoints go (default /tmp); needs about 45 GB free
#
# Peak memory comes from /usr/bin/time -v (ru_maxrss: the most resident pages at once) and from sampling
# /proc/PID/status twice a second, which splits resident memory into RssFile (pages of the mmapped
# source that the process has touched and still maps: page cache the kernel may reclaim, but counted
# in RSS) and RssAnon (the heap: buffers the tool allocated).
set -euo pipefail

keep=0
bin=build/lg-convert
base=/tmp
while [ $# -gt 0 ]; do
    case "$1" in
    --keep) keep=1 ;;
    --bin) bin=$2; shift ;;
    --dir) base=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-convert: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
    shift
done

src=$base/lg-bench-7b
out=$base/lg-bench-7b-longgen
logs=$(mktemp -d "$base/lg-bench-logs.XXXXXX")
trap 'rm -rf "$logs"' EXIT

die() { echo "bench-convert: $*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin not found (cmake --build build --target lg-convert)"
# GNU time for -v (wall time, peak RSS) and jq to check an existing source's config
for need in /usr/bin/time:time jq:jq; do
    command -v "${need%%:*}" >/dev/null && continue
    echo "bench-convert: installing ${need#*:}" >&2
    apt-get install -y "${need#*:}" >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y "${need#*:}" >/dev/null; } ||
        die "cannot install the '${need#*:}' package"
done

# The 7B shape from the Llama-2 release, as `lg-convert synth --shape 7b --dtype f16` writes it:
# 6,738,415,616 parameters, 2 bytes each.
want_bytes=13476831232
source_ok() {
    [ -f "$src/config.json" ] && [ -f "$src/model.safetensors.index.json" ] || return 1
    local cfg
    cfg=$(jq -c '[.hidden_size, .intermediate_size, .num_hidden_layers, .num_attention_heads,
                  .vocab_size, .torch_dtype]' "$src/config.json")
    [ "$cfg" = '[4096,11008,32,32,32000,"float16"]' ] || return 1
    [ "$(jq '.metadata.total_size' "$src/model.safetensors.index.json")" = "$want_bytes" ] || return 1
    local shards
    shards=$(jq -r '.weight_map | [.[]] | unique | .[]' "$src/model.safetensors.index.json")
    [ "$(echo "$shards" | wc -l)" = 2 ] || return 1
    for s in $shards; do [ -f "$src/$s" ] || return 1; done
}

# ---- disk space: source 13.5 GB + two outputs of 13.5 GB (each removed after its run) + margin
have_source=0
source_ok && have_source=1
avail_gb=$(df -P -BG "$base" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
need_gb=$((have_source ? 32 : 45))
echo "bench-convert: $avail_gb GB free in $base (need $need_gb)"
[ "$avail_gb" -ge "$need_gb" ] || die "not enough space in $base: $avail_gb GB free, $need_gb GB needed"

if [ $have_source = 1 ]; then
    echo "bench-convert: reusing $src"
else
    rm -rf "$src"
    echo "bench-convert: generating $src"
    "$bin" synth -o "$src" --shape 7b --shards 2 --dtype f16
    source_ok || die "$src does not look like the 7B checkpoint it should be"
fi

# ---- cache control
can_drop=0
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then can_drop=1; fi
evict_source() {
    sync
    if [ $can_drop = 1 ]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        # without privileges: ask the kernel to drop these files' clean pages
        python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' \
            "$src"/*.safetensors
    fi
}
warm_source() { cat "$src"/*.safetensors >/dev/null; }

# ---- one timed run: name, then lg-convert's arguments after SRC
results=()
run() {
    local name=$1 dest=$2
    shift 2
    rm -rf "$dest"
    local tlog=$logs/$name.time clog=$logs/$name.log load
    # the machine may be shared: note how busy it was when the run started
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -v -o "$tlog" "$bin" "$src" -o "$dest" --force "$@" 2>"$clog" &
    local tpid=$! pid="" anon=0 file=0 a f
    echo "bench-convert: $name: $bin $src -o $dest --force $*"
    # the tool is time's only child; sample its resident memory while it runs
    for _ in $(seq 50); do
        pid=$(pgrep -P "$tpid" || true)
        [ -n "$pid" ] && break
        sleep 0.02
    done
    while [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; do
        read -r a f < <(awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print a + 0, f + 0 }' \
            "/proc/$pid/status" 2>/dev/null || echo "0 0")
        [ "$a" -gt "$anon" ] && anon=$a
        [ "$f" -gt "$file" ] && file=$f
        sleep 0.5
    done
    wait "$tpid" || { cat "$clog" >&2; die "$name: lg-convert failed"; }
    local wall rss bytes
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0;
                for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$tlog")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tlog")
    bytes=$(stat -c %s "$dest"/*.safetensors | awk '{ s += $1 } END { print s }')
    results+=("$(awk -v n="$name" -v w="$wall" -v b="$bytes" -v r="$rss" -v f="$file" -v a="$anon" \
        -v l="$load" 'BEGIN { printf "| %s | %.1f | %.2f | %.2f | %.2f | %.2f | %.0f | %s |", n, w,
                 b / 1e9, b / 1e9 / w, r / 1048576, f / 1048576, a / 1024, l }')")
    echo "bench-convert: $name: $(tail -n 1 "$clog")"
    [ $keep = 1 ] || rm -rf "$dest"
}

echo "bench-convert: warm-cache copy (source read into the page cache first)"
warm_source
run "f16 copy, warm cache" "$out"

if [ $can_drop = 1 ]; then
    echo "bench-convert: cold-cache copy (echo 3 > /proc/sys/vm/drop_caches)"
else
    echo "bench-convert: cold-cache copy (drop_caches not permitted: posix_fadvise(DONTNEED) on the source)"
fi
evict_source
run "f16 copy, cold cache" "$out"

echo "bench-convert: f16 -> bf16 conversion (warm cache)"
warm_source
run "f16 -> bf16, warm cache" "$out-bf16" --dtype bf16

echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GB RAM, source $src ($((want_bytes / 1000000)) MB of tensors)"
echo "cold cache by: $([ $can_drop = 1 ] && echo 'drop_caches' || echo 'posix_fadvise DONTNEED')"
echo
echo "| run | wall s | GB written | GB/s | peak RSS GB | peak RssFile GB | peak RssAnon MB | load at start |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${results[@]}"

if [ $keep = 0 ]; then
    rm -rf "$src" "$out" "$out-bf16"
    echo "bench-convert: removed $src and the outputs (--keep to leave them)"
fi
