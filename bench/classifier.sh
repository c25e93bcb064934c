#!/usr/bin/env bash
# In-process serving cost (issue 8): Classifier.predictBatch on MRPC dev pairs, merged 50% pruned
# model vs its backbone with MRPC and SST-2 adapters unmerged, fp32 and bf16 products, batch 1 and 8
# (dev.topa.bench.ClassifierBench). Needs what bench/serve-load.sh makes first (its adapters and
# pairs file). Prints `name: value` lines; the multi-task cost at batch 8 in bf16 last.
# Usage: bench/classifier.sh   (env: PRUNED=dir, default out/mrpc)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME OMP_WAIT_POLICY=PASSIVE
work="$root/bench/results/serve" pruned="${PRUNED:-$root/out/mrpc}"
[ -f "$work/adapter-mrpc/adapter.safetensors" ] || { echo "run bench/serve-load.sh first (it makes the adapters)" >&2; exit 1; }
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$root/bench/target/benchmarks.jar" dev.topa.bench.ClassifierBench \
    "$work/mrpc-dev-pairs.txt" "$pruned" "$pruned" "$work/adapter-mrpc,$work/adapter-sst2" 2>/dev/null | tee "$out"
awk -F': ' '{ v[$1] = $2 } END {
    printf "multitask_over_merged_fp32_batch8: %.3f\n", v["multitask_fp32_batch8_ms_per_input"] / v["merged_fp32_batch8_ms_per_input"];
    printf "bf16_speedup_merged_batch8: %.3f\n", v["merged_fp32_batch8_ms_per_input"] / v["merged_bf16_batch8_ms_per_input"];
    printf "multitask_over_merged_bf16_batch8: %.3f\n", v["multitask_bf16_batch8_ms_per_input"] / v["merged_bf16_batch8_ms_per_input"];
}' "$out"
