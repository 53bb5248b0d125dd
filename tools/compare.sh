#!/usr/bin/env bash
# Side by side: our engine's `train bench` and the PyTorch peer
# (tools/peer_bench.py, the same Keras-topology ResNet50 at 32x32), with the
# same threads / batch / steps / warm-up, then a table of images/s and peak
# training RSS with the ratio ours/PyTorch (>1: ours is faster, or uses more
# memory in the RSS row).
#
#   tools/compare.sh [--threads 2] [--batch-size 64] [--steps 10] [--warmup 3]
#                    [--rounds 1] [--memory-format both|contiguous|channels_last]
#                    [--precision fp32|bf16] [--no-build]
#
# --rounds N runs the pair N times, alternating, and reports each round and
# the median over rounds (the machine's speed drifts; alternating spreads
# the drift over both). --precision is ours only (`train bench --precision`;
# PyTorch stays fp32: its bf16 autocast gains nothing on these CPUs).
# PYTHON (default /work/venv/bin/python) runs the peer; the Rust binary is
# built with `cargo build --release -p train` first (skip with --no-build).
# Inference is timed at batch 64 and 256 by both. Raw outputs are printed too.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/work/venv/bin/python}
threads=2 batch=64 steps=10 warmup=3 rounds=1 memfmt=both build=1 precision=fp32
infer_batches=64,256

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need() { [[ $# -ge 2 && -n $2 ]] || { echo "compare.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    arg=$1
    if [[ $arg == --*=* ]]; then set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg=$1; fi
    case $arg in
        --threads)       need "$@"; threads=$2; shift 2 ;;
        --batch-size)    need "$@"; batch=$2; shift 2 ;;
        --steps)         need "$@"; steps=$2; shift 2 ;;
        --warmup)        need "$@"; warmup=$2; shift 2 ;;
        --rounds)        need "$@"; rounds=$2; shift 2 ;;
        --memory-format) need "$@"; memfmt=$2; shift 2 ;;
        --precision)     need "$@"; precision=$2; shift 2 ;;
        --no-build)      build=0; shift ;;
        -h|--help)       usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in "$threads" "$batch" "$steps" "$warmup" "$rounds"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "compare.sh: '$v' is not a non-negative integer" >&2; exit 2; }
done
[[ $rounds -ge 1 ]] || { echo "compare.sh: --rounds must be at least 1" >&2; exit 2; }

cd "$repo"
bin=${CARGO_TARGET_DIR:-$repo/target}/release/train
if [[ $build == 1 ]]; then
    cargo build --release -p train >&2
fi
[[ -x $bin ]] || { echo "compare.sh: no binary at $bin (build with: cargo build --release -p train)" >&2; exit 1; }
[[ -x $python ]] || command -v "$python" >/dev/null || { echo "compare.sh: no python at $python (set PYTHON)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for r in $(seq "$rounds"); do
    echo "== round $r of $rounds"
    echo "load before: $(uptime)"
    echo "== ours: $bin bench --threads $threads --batch-size $batch --steps $steps --warmup $warmup --inference-batches $infer_batches --precision $precision"
    "$bin" bench --threads "$threads" --batch-size "$batch" --steps "$steps" --warmup "$warmup" \
        --inference-batches "$infer_batches" --precision "$precision" | tee "$tmp/ours.$r.txt"
    echo "load between: $(uptime)"
    echo "== PyTorch: $python tools/peer_bench.py --threads $threads --batch-size $batch --steps $steps --warmup $warmup --inference-batches $infer_batches --memory-format $memfmt"
    "$python" tools/peer_bench.py --threads "$threads" --batch-size "$batch" --steps "$steps" --warmup "$warmup" \
        --inference-batches "$infer_batches" --memory-format "$memfmt" | tee "$tmp/torch.$r.txt"
    echo "load after: $(uptime)"
done

# images/s of the first line matching an anchored regex (the PyTorch output's
# per-format lines are indented, so only its chosen-best lines match).
rate() {
    awk -v re="$2" '$0 ~ re { for (i = 2; i <= NF; i++) if ($i == "images/s") { print $(i - 1); exit } }' "$1"
}
train_rss() { awk '/^peak RSS after training steps:/ { print $(NF - 1); exit }' "$1"; }
fmt_of() { grep -m1 "^memory format for $2" "$1" | sed 's/^memory format for [a-z]*: //' || true; }

row() { # label unit ours torch
    awk -v l="$1" -v u="$2" -v a="$3" -v b="$4" 'BEGIN {
        sa = (a == "" ? "n/a" : (u == "" ? a : a " " u)); sb = (b == "" ? "n/a" : (u == "" ? b : b " " u))
        if (a == "" || b == "" || b + 0 == 0) printf "%-28s %12s %12s %8s\n", l, sa, sb, "n/a"
        else printf "%-28s %12s %12s %8.2f\n", l, sa, sb, a / b }'
}

tr_re='^training step +batch +'$batch':'
i64_re='^inference +batch +64:'
i256_re='^inference +batch +256:'

# Median of the numbers on stdin (empty if none).
median() { sort -g | awk -v f="${1:-%.1f}" '{ v[NR] = $1 } END { if (NR) printf f "\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# One metric over all rounds, one value per line: `over_rounds SIDE EXTRACTOR ARGS...`
# runs EXTRACTOR on SIDE's output file of every round.
over_rounds() {
    local side=$1 f=$2; shift 2
    for r in $(seq "$rounds"); do "$f" "$tmp/$side.$r.txt" "$@"; echo; done | grep -v '^$' || true
}

table() { # a round number, or "median" for the medians over all rounds
    local which=$1
    if [[ $which == median ]]; then
        printf '%-28s %12s %12s %8s\n' "median of $rounds rounds" "ours" "PyTorch" "ours/PT"
        row "training images/s" "" "$(over_rounds ours rate "$tr_re" | median)" "$(over_rounds torch rate "$tr_re" | median)"
        row "inference b64 images/s" "" "$(over_rounds ours rate "$i64_re" | median)" "$(over_rounds torch rate "$i64_re" | median)"
        row "inference b256 images/s" "" "$(over_rounds ours rate "$i256_re" | median)" "$(over_rounds torch rate "$i256_re" | median)"
        row "peak training RSS" "MB" "$(over_rounds ours train_rss | median %.0f)" "$(over_rounds torch train_rss | median %.0f)"
    else
        printf '%-28s %12s %12s %8s\n' "round $which" "ours" "PyTorch" "ours/PT"
        row "training images/s" "" "$(rate "$tmp/ours.$which.txt" "$tr_re")" "$(rate "$tmp/torch.$which.txt" "$tr_re")"
        row "inference b64 images/s" "" "$(rate "$tmp/ours.$which.txt" "$i64_re")" "$(rate "$tmp/torch.$which.txt" "$i64_re")"
        row "inference b256 images/s" "" "$(rate "$tmp/ours.$which.txt" "$i256_re")" "$(rate "$tmp/torch.$which.txt" "$i256_re")"
        row "peak training RSS" "MB" "$(train_rss "$tmp/ours.$which.txt")" "$(train_rss "$tmp/torch.$which.txt")"
    fi
}

echo
echo "CPU: $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: //') ($(nproc) CPUs)"
echo "ours: $(grep -m1 'gemm kernel' "$tmp/ours.1.txt" | sed 's/.*gemm kernel/gemm kernel/')"
echo "ResNet50 (Keras topology) 32x32, ours $precision / PyTorch fp32, $threads thread(s), training batch $batch, median of $steps steps after $warmup warm-up"
echo "PyTorch memory format: training $(fmt_of "$tmp/torch.1.txt" training); inference $(fmt_of "$tmp/torch.1.txt" inference)"
for r in $(seq "$rounds"); do
    table "$r"
done
if [[ $rounds -gt 1 ]]; then
    table median
fi
torch_base=$(awk '/^RSS after import torch/ { print $(NF - 1); exit }' "$tmp/torch.1.txt")
if [[ -n $torch_base ]]; then echo "(PyTorch's RSS includes ${torch_base} MB for importing torch alone)"; fi
echo "note: on a shared machine check the load lines above before trusting a ratio"
