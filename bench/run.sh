#!/usr/bin/env bash
# Builds the binaries as they ship (the `image` profile), makes the benchmark corpus if it is missing, and runs the whole
# benchmark; results go to bench/results/ (results.md, results.json, throughput.svg).
#
#   bench/run.sh                                   # the full run: 1 GiB corpus, 3 runs, 5 GiB streamed
#   CORPUS=/tmp/corpus16 CORPUS_ARGS="--logs-mb 16" bench/run.sh --runs 1 --big-gib 1   # quick
#
# Environment:
#   CORPUS       the corpus folder (default /tmp/s3-compressor-corpus); made if it has no logs.jsonl
#   CORPUS_ARGS  extra arguments for make_corpus.py when it is made, e.g. "--logs-mb 16"
#   MAKE_CORPUS  the corpus generator (default ../shared/bench/make_corpus.py, from the repo root)
# Arguments are passed to `s3-compressor-bench run` (--runs, --big-gib, --skip-tools, --out, ...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CORPUS="${CORPUS:-/tmp/s3-compressor-corpus}"
MAKE_CORPUS="${MAKE_CORPUS:-../shared/bench/make_corpus.py}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --profile image -p s3-compressor -p s3-compressor-bench

if [[ ! -f "$CORPUS/logs.jsonl" ]]; then
    read -r -a corpus_args <<<"${CORPUS_ARGS:-}"
    echo "making the corpus in $CORPUS" >&2
    python3 "$MAKE_CORPUS" "$CORPUS" "${corpus_args[@]}"
fi

exec "$TARGET_DIR/image/s3-compressor-bench" run --corpus "$CORPUS" --out bench/results "$@"
