#!/usr/bin/env bash
# Activations kept for backward in bf16 vs fp32 (the context, QKV projection and FFN pre-activation;
# LayerNorm inputs stay fp32): one training step of the default model's shape (MiniLM-L6, batch 32 x
# seq 128) on the CPU, LoRA as `topa finetune` runs it (QKV/FFN-in recomputed, bf16 frozen base on
# AVX512_BF16 CPUs, else fp32) and full fine-tuning (everything kept). Each variant in its own process,
# one after the other. Prints `name: value` lines (seconds per step, activation and total peaks),
# ending with lora_bf16act_over_fp32act_activation_peak.
# Usage: bench/train-activations.sh   (env: THREADS=2, STEPS=5)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
threads="${THREADS:-2}" steps="${STEPS:-5}"
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
lora=lora-recompute
grep -qw avx512_bf16 /proc/cpuinfo && lora=lora-recompute-bf16
out="$(mktemp)"
for m in full full-bf16act "$lora" "$lora-bf16act"; do
    "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -cp "$root/bench/target/benchmarks.jar" \
        dev.topa.bench.TrainBench "$m" "$threads" "$steps" 2>/dev/null | tee -a "$out"
done
awk -F': ' -v d="$lora" '{v[$1] = $2} END {
    printf "full_bf16act_step_time_ratio: %.3f\n", v["full-bf16act_step_seconds"] / v["full_step_seconds"];
    printf "lora_bf16act_step_time_ratio: %.3f\n", v[d "-bf16act_step_seconds"] / v[d "_step_seconds"];
    printf "full_bf16act_over_fp32act_activation_peak: %.3f\n", v["full-bf16act_activations_peak_mib"] / v["full_activations_peak_mib"];
    printf "lora_bf16act_over_fp32act_activation_peak: %.3f\n", v[d "-bf16act_activations_peak_mib"] / v[d "_activations_peak_mib"];
}' "$out"
rm -f "$out"
