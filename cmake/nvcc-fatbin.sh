#!/bin/sh
# nvcc for the kernel fatbin, keeping ptxas's per-kernel report (registers, stack, spills) in a
# file a test reads; the report goes to stderr as well when the build fails.
# Usage: nvcc-fatbin.sh NVCC OUT.fatbin SOURCE.cu PTXAS_REPORT
nvcc="$1" out="$2" src="$3" report="$4"
"$nvcc" -std=c++17 -O3 -fatbin -Xptxas -v \
    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 \
    -o "$out" "$src" 2> "$report" || { cat "$report" >&2; exit 1; }
