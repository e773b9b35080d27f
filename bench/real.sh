#!/usr/bin/env bash
# The zip codec against zip, gzip, pigz and zstd on the real corpora of bench/real_corpus.py:
# ratio and CPU seconds per GB of each, as the markdown table in bench/README.md ("Real data").
# Every contender runs once per round and the rounds repeat, so a busy moment of the machine
# falls on all of them alike; CPU is the median over the rounds (user + system, /usr/bin/time),
# the ratio is exact (input bytes / output bytes). Each output of the codec is checked with
# `unzip -tq`.
#
#   python3 bench/real_corpus.py /tmp/s3-compressor-real
#   bench/real.sh /tmp/s3-compressor-real [S3_COMPRESSOR_BENCH] [ROUNDS]
set -euo pipefail

corpus="$1"
bench="${2:-target/image/s3-compressor-bench}"
rounds="${3:-3}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

contenders=("zip -6" "gzip -6" "pigz -6 -p 2" "zstd -3" "zip codec" "zip -6 (1 core)"
    "zip codec (1 core)")

# NAME INPUT OUTPUT: runs contender NAME on INPUT into OUTPUT, prints its CPU seconds.
run() {
    local name=$1 input=$2 output=$3
    rm -f "$output"
    local cmd
    # The single quotes are the inner shell's script; its $1 and $2 are the arguments after it.
    # shellcheck disable=SC2016
    case "$name" in
    "zip -6") cmd=(zip -6 -q "$output" "$input") ;;
    "gzip -6") cmd=(sh -c 'gzip -6 -c "$1" >"$2"' - "$input" "$output") ;;
    "pigz -6 -p 2") cmd=(sh -c 'pigz -6 -p 2 -c "$1" >"$2"' - "$input" "$output") ;;
    "zstd -3") cmd=(zstd -3 -q -o "$output" "$input") ;;
    "zip codec") cmd=("$bench" codec --format zip "$input" "$output") ;;
    "zip -6 (1 core)") cmd=(taskset -c 0 zip -6 -q "$output" "$input") ;;
    "zip codec (1 core)") cmd=(taskset -c 0 "$bench" codec --format zip "$input" "$output") ;;
    esac
    /usr/bin/time -f '%U %S' -o "$scratch/time" "${cmd[@]}" >/dev/null 2>"$scratch/err" || {
        cat "$scratch/err" >&2
        return 1
    }
    awk '{ print $1 + $2 }' "$scratch/time"
}

echo "| corpus | MB | contender | ratio | vs \`zip -6\` | CPU s/GB | CPU ÷ \`zip -6\`'s |"
echo "|---|---:|---|---:|---:|---:|---:|"
for input in "$corpus"/*.tar; do
    name=$(basename "$input" .tar)
    size=$(stat -c %s "$input")
    cat "$input" >/dev/null
    declare -A cpu=() out=()
    for ((round = 0; round < rounds; round++)); do
        for i in "${!contenders[@]}"; do
            c=${contenders[$i]}
            echo "$name round $((round + 1)): $c" >&2
            seconds=$(run "$c" "$input" "$scratch/out$i.zip")
            cpu[$i]="${cpu[$i]:-} $seconds"
            out[$i]=$(stat -c %s "$scratch/out$i.zip")
            if [[ $c == "zip codec"* ]]; then
                unzip -tq "$scratch/out$i.zip" >/dev/null
            fi
        done
    done
    median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    zip_cpu=$(median "${cpu[0]}")
    for i in "${!contenders[@]}"; do
        awk -v corpus="$name" -v c="${contenders[$i]}" -v size="$size" -v out="${out[$i]}" \
            -v zip_out="${out[0]}" -v cpu="$(median "${cpu[$i]}")" -v zip_cpu="$zip_cpu" 'BEGIN {
            printf "| %s | %.1f | %s | %.4f | %+.2f%% | %.2f | %.2f |\n", corpus, size / 1e6, c,
                size / out, (out / zip_out - 1) * 100, cpu / (size / 1e9), cpu / zip_cpu
        }'
    done
    unset cpu out
done
