#!/usr/bin/env bash
# The Pruning-Adapter's speed and memory figures (issue 5), first cut: the default model with 50%
# of its heads and FFN neurons structurally removed vs dense, at batch 32 x seq 128; each
# measurement in its own process. Prints `name: value` lines: infer_speedup_50,
# infer_memory_ratio_50 (encoder weights + activations, pruned / dense), train_memory_ratio_vs_full
# (Pruning-Adapter training peak / dense full fine-tuning peak), blocksparse80_fwd_speedup and
# blocksparse80_bwd_speedup (32 x 32 block-sparse kernel at 80% block sparsity vs our dense GEMM,
# BERT-base FFN shapes, the smaller of the two shapes).
# Usage: bench/prune.sh   (env: THREADS=2, ITERATIONS=10)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
threads="${THREADS:-2}"
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
java=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -cp "$root/bench/target/benchmarks.jar")
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"${java[@]}" dev.topa.bench.TrainBench full "$threads" 5 2>/dev/null | tee -a "$out"
"${java[@]}" dev.topa.bench.PruneBench train "$threads" 2>/dev/null | tee -a "$out"
"${java[@]}" dev.topa.bench.PruneBench infer "$threads" "${ITERATIONS:-10}" 2>/dev/null | tee -a "$out"
"${java[@]}" dev.topa.bench.PruneBench blocksparse "$threads" 7 2>/dev/null | tee -a "$out"
awk -F': ' '{v[$1] = $2} END {
    printf "train_memory_ratio_vs_full: %.3f\n", v["prune_adapt50_peak_mib"] / v["full_peak_mib"];
}' "$out"
