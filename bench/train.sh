#!/usr/bin/env bash
# One training step of the default model's shape (MiniLM-L6, batch 32 x seq 128): topa vs PyTorch
# CPU eager at its best here (Debian python3-torch with libopenblas0-openmp, SkylakeX kernel,
# 2 threads), full fine-tuning and LoRA (r 8, all six linears). topa runs full fine-tuning and LoRA
# with QKV/FFN-in recomputed, its frozen base in fp32 (lora-recompute) and in bf16
# (lora-recompute-bf16); PyTorch eager in fp32 and under bf16 autocast (oneDNN; AMX tiles where the
# CPU has them). Each engine and method runs in its own process, one after the other. The headline
# LoRA figures are for `topa finetune`'s LoRA default: the frozen-base precision it measures faster
# here (TrainBench choice), not a CPU flag. Prints `name: value` lines, ending with
# lora_step_speedup_vs_pytorch (the default, against PyTorch fp32), full_step_speedup_vs_pytorch,
# lora_over_full_peak_memory (the default).
# Usage: bench/train.sh   (env: THREADS=2, STEPS=5)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
threads="${THREADS:-2}" steps="${STEPS:-5}"
need=()
/usr/bin/python3 -c "import torch" 2>/dev/null || need+=(python3-torch)
[ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] || need+=(libopenblas0-openmp)
if [ ${#need[@]} -gt 0 ]; then
    echo "train.sh: installing ${need[*]} (Debian)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
out="$(mktemp)"
for m in full lora-recompute lora-recompute-bf16; do
    "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -cp "$root/bench/target/benchmarks.jar" \
        dev.topa.bench.TrainBench "$m" "$threads" "$steps" 2>/dev/null | tee -a "$out"
done
for m in full lora full-bf16 lora-bf16; do
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS="$threads" \
        OMP_NUM_THREADS="$threads" /usr/bin/python3 "$root/bench/reference/train_step.py" "$m" "$steps" | tee -a "$out"
done
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$root/bench/target/benchmarks.jar" dev.topa.bench.TrainBench choice \
    "$threads" 2>/dev/null | tee -a "$out"
lora=lora-recompute
grep -q "^lora_default_base_precision: bf16" "$out" && lora=lora-recompute-bf16
echo "lora_default_variant: $lora"
awk -F': ' -v d="$lora" '{v[$1] = $2} END {
    printf "lora_fp32_step_speedup_vs_pytorch: %.3f\n", v["lora_pytorch_step_seconds"] / v["lora-recompute_step_seconds"];
    printf "lora_bf16_step_speedup_vs_pytorch: %.3f\n", v["lora_pytorch_step_seconds"] / v["lora-recompute-bf16_step_seconds"];
    printf "lora_step_speedup_vs_pytorch_bf16: %.3f\n", v["lora-bf16_pytorch_step_seconds"] / v[d "_step_seconds"];
    printf "full_step_speedup_vs_pytorch_bf16: %.3f\n", v["full-bf16_pytorch_step_seconds"] / v["full_step_seconds"];
    printf "lora_step_speedup_vs_pytorch: %.3f\n", v["lora_pytorch_step_seconds"] / v[d "_step_seconds"];
    printf "full_step_speedup_vs_pytorch: %.3f\n", v["full_pytorch_step_seconds"] / v["full_step_seconds"];
    printf "lora_over_full_peak_memory: %.3f\n", v[d "_peak_mib"] / v["full_peak_mib"];
}' "$out"
rm -f "$out"
