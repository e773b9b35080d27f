#!/usr/bin/env bash
# The deflate engines as CLI tools beside the zip codec, on one core: CPU seconds, CPU s/GB
# and ratio of each on one file, as a markdown table (bench/README.md, "The deflate engine").
# Needs zip, gzip, zstd, and libdeflate-gzip and igzip (Debian: libdeflate-tools, isal).
#
#   bench/engines.sh FILE [S3_COMPRESSOR_BENCH]
set -euo pipefail

input="$1"
bench="${2:-target/image/s3-compressor-bench}"
size=$(stat -c %s "$input")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat "$input" >/dev/null # into the page cache, as for every contender after it

# NAME OUTPUT COMMAND...: runs COMMAND on CPU 0 with stdout to OUTPUT, prints a table row.
row() {
    local name=$1 output=$2
    shift 2
    local times
    times=$({ /usr/bin/time -f '%U %S' taskset -c 0 "$@" >"$output"; } 2>&1 | tail -n 1)
    local out_size
    out_size=$(stat -c %s "$output")
    awk -v name="$name" -v t="$times" -v in_size="$size" -v out_size="$out_size" 'BEGIN {
        split(t, cpu, " "); s = cpu[1] + cpu[2]
        printf "| %s | %.2f | %.2f | %.3f |\n", name, s, s / (in_size / 1e9), in_size / out_size
    }'
}

echo "| contender (taskset -c 0) | CPU s | CPU s/GB | ratio |"
echo "|---|---:|---:|---:|"
row "zip -6" "$scratch/out" zip -6 -q - "$input"
row "gzip -6" "$scratch/out" gzip -6 -c "$input"
row "libdeflate-gzip -6" "$scratch/out" libdeflate-gzip -6 -c "$input"
row "libdeflate-gzip -5" "$scratch/out" libdeflate-gzip -5 -c "$input"
row "igzip -1" "$scratch/out" igzip -1 -c "$input"
row "igzip -3" "$scratch/out" igzip -3 -c "$input"
row "zstd -3 -T1" "$scratch/out" zstd -3 -T1 -q -c "$input"
row "s3-compressor zip codec (1 core)" "$scratch/out" "$bench" codec --format zip "$input" /dev/stdout
