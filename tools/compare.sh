#!/usr/bin/env bash
# Side by side: our engine's `train bench` and the PyTorch peer
# (tools/peer_bench.py, the same Keras-topology ResNet50 at 32x32), with the
# same threads / batch / steps / warm-up, then a table of images/s and peak
# training RSS with the ratio ours/PyTorch (>1: ours is faster, or uses more
# memory in the RSS row).
#
#   tools/compare.sh [--threads 2] [--batch-size 64] [--steps 10] [--warmup 3]
#                    [--memory-format both|contiguous|channels_last] [--no-build]
#
# PYTHON (default /work/venv/bin/python) runs the peer; the Rust binary is
# built with `cargo build --release -p train` first (skip with --no-build).
# Inference is timed at batch 64 and 256 by both. Raw outputs are printed too.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/work/venv/bin/python}
threads=2 batch=64 steps=10 warmup=3 memfmt=both build=1
infer_batches=64,256

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need() { [[ $# -ge 2 && -n $2 ]] || { echo "compare.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    arg=$1
    if [[ $arg == --*=* ]]; then set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; arg=$1; fi
    case $arg in
        --threads)       need "$@"; threads=$2; shift 2 ;;
        --batch-size)    need "$@"; batch=$2; shift 2 ;;
        --steps)         need "$@"; steps=$2; shift 2 ;;
        --warmup)        need "$@"; warmup=$2; shift 2 ;;
        --memory-format) need "$@"; memfmt=$2; shift 2 ;;
        --no-build)      build=0; shift ;;
        -h|--help)       usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in "$threads" "$batch" "$steps" "$warmup"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "compare.sh: '$v' is not a non-negative integer" >&2; exit 2; }
done

cd "$repo"
bin=${CARGO_TARGET_DIR:-$repo/target}/release/train
if [[ $build == 1 ]]; then
    cargo build --release -p train >&2
fi
[[ -x $bin ]] || { echo "compare.sh: no binary at $bin (build with: cargo build --release -p train)" >&2; exit 1; }
[[ -x $python ]] || command -v "$python" >/dev/null || { echo "compare.sh: no python at $python (set PYTHON)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "load before: $(uptime)"
echo "== ours: $bin bench --threads $threads --batch-size $batch --steps $steps --warmup $warmup --inference-batches $infer_batches"
"$bin" bench --threads "$threads" --batch-size "$batch" --steps "$steps" --warmup "$warmup" \
    --inference-batches "$infer_batches" | tee "$tmp/ours.txt"
echo "load between: $(uptime)"
echo "== PyTorch: $python tools/peer_bench.py --threads $threads --batch-size $batch --steps $steps --warmup $warmup --inference-batches $infer_batches --memory-format $memfmt"
"$python" tools/peer_bench.py --threads "$threads" --batch-size "$batch" --steps "$steps" --warmup "$warmup" \
    --inference-batches "$infer_batches" --memory-format "$memfmt" | tee "$tmp/torch.txt"
echo "load after: $(uptime)"

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
echo
echo "ResNet50 (Keras topology) 32x32 fp32, $threads thread(s), training batch $batch, median of $steps steps after $warmup warm-up"
echo "PyTorch memory format: training $(fmt_of "$tmp/torch.txt" training); inference $(fmt_of "$tmp/torch.txt" inference)"
printf '%-28s %12s %12s %8s\n' "" "ours" "PyTorch" "ours/PT"
row "training images/s" "" "$(rate "$tmp/ours.txt" "$tr_re")" "$(rate "$tmp/torch.txt" "$tr_re")"
row "inference b64 images/s" "" "$(rate "$tmp/ours.txt" "$i64_re")" "$(rate "$tmp/torch.txt" "$i64_re")"
row "inference b256 images/s" "" "$(rate "$tmp/ours.txt" "$i256_re")" "$(rate "$tmp/torch.txt" "$i256_re")"
row "peak training RSS" "MB" "$(train_rss "$tmp/ours.txt")" "$(train_rss "$tmp/torch.txt")"
torch_base=$(awk '/^RSS after import torch/ { print $(NF - 1); exit }' "$tmp/torch.txt")
if [[ -n $torch_base ]]; then echo "(PyTorch's RSS includes ${torch_base} MB for importing torch alone)"; fi
echo "note: single runs; on a shared machine check the load lines above before trusting a ratio"
