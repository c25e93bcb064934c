#!/usr/bin/env bash
# Which block edge for block-sparse weights: native/blocksparse.c built with 16, 32 and 64-wide
# blocks (AVX-512, as the engine picks on this CPU) and timed back to back at the same kept
# fraction on BERT-base FFN shapes (bench/blockshape.c). Prints `name: value` lines, best_block_edge
# last. Usage: bench/blockshape.sh [reps]   (env: THREADS=2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(-O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma -fopenmp -I"$root/native")
for b in 16 32 64; do
    gcc "${flags[@]}" -DSB=$b -DTOPA_SUFFIX=_bs$b -c "$root/native/blocksparse.c" -o "$work/bs$b.o"
done
gcc "${flags[@]}" "$root/bench/blockshape.c" "$work"/bs*.o -o "$work/blockshape"
OMP_NUM_THREADS="${THREADS:-2}" "$work/blockshape" "${1:-7}"
