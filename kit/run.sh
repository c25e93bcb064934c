#!/usr/bin/env bash
# The GPU kit, run on the device machine in one `run` call (see kit/README.md): reports the
# machine, then every CUDA kernel against the CPU backend (CudaOpCheck: fp32 and bf16, poisoned
# outputs, stated bounds) with each kernel's time and bandwidth. Uses the carried runtime
# (kit/dist/jre) when the machine has no JDK >= 22; rebuilds the fatbin with nvcc when the
# carried one is missing. Logs go to $OUT (or /tmp/topa-gpu); the summary table is printed last.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-/tmp/topa-gpu}"
mkdir -p "$out"
kit="$root/kit/dist"
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    command -v nvcc >/dev/null && nvcc --version | tail -2 | sed 's/^/nvcc: /' || echo "nvcc: absent"
} | tee "$out/machine.txt"
java="$kit/jre/bin/java"
if [ ! -x "$java" ]; then # no carried runtime: a JDK >= 22 on this machine, found as ./topa finds one
    source "$root/scripts/find-jdk.sh"
    jdk="$(topa_find_jdk 2>/dev/null)" || { echo "run.sh: no carried runtime (kit/dist/jre) and no JDK >= 22 here" >&2; exit 3; }
    java="$jdk/bin/java"
fi
echo "java: $("$java" -version 2>&1 | head -1)" | tee -a "$out/machine.txt"
jar="$kit/topa.jar"
[ -f "$jar" ] || { echo "run.sh: $jar missing: run kit/build.sh before the call and carry kit/dist" >&2; exit 3; }
props=()
if ! grep -aq topa_kernels.fatbin "$jar"; then # zip entry names are stored uncompressed (no unzip there)
    echo "run.sh: building the fatbin here" | tee -a "$out/machine.txt"
    nvcc -std=c++17 -O3 -fatbin -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
        -o "$out/topa_kernels.fatbin" "$root/cuda-kernels/kernels.cu" > "$out/nvcc.log" 2>&1 || { cat "$out/nvcc.log"; exit 4; }
    props+=("-Dtopa.cuda.fatbin=$out/topa_kernels.fatbin")
fi
# the SASS of the kernels as they run here (cuobjdump is on the device machine, not on the build machines)
fatbin="$out/topa_kernels.fatbin"
extracted=0
if [ ! -f "$fatbin" ]; then
    extracted=1
    python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('native/linux-x86_64/topa_kernels.fatbin'))" \
        "$jar" "$fatbin" 2>/dev/null
fi
if command -v cuobjdump >/dev/null && [ -f "$fatbin" ]; then
    cuobjdump -arch sm_90a -sass "$fatbin" > "$out/sass.txt" 2>&1
    # per kernel: tensor-core MMAs, 16-byte global loads/stores, local-memory (spill) accesses
    awk '/Function :/ { f = $3 } /HMMA/ { h[f]++ } /LDG\.E\.128/ { l[f]++ } /STG\.E\.128/ { s[f]++ } /LDL|STL/ { sp[f]++ }
         /Function :/ { seen[$3] = 1 }
         END { for (k in seen) printf "sass_%s: hmma %d, ldg128 %d, stg128 %d, local %d\n", k, h[k], l[k], s[k], sp[k] }' "$out/sass.txt" | sort > "$out/sass-summary.txt"
fi
[ $extracted -eq 0 ] || rm -f "$fatbin"
# each check in its own JVM under a time limit (seconds): a kernel that hangs costs its own step, not
# the whole call; output appends to the log (so LoraForwardBench follows TrainingStepParity's lines)
step() {
    local limit=$1 cls=$2 log=$3
    timeout "$limit" "$java" --enable-native-access=ALL-UNNAMED "${props[@]}" -cp "$jar" $cls >> "$log" 2>&1 # $cls: a class and its arguments
    local code=$?
    [ $code -ne 124 ] || echo "$cls: timed out after ${limit} s" | tee -a "$log"
    return $code
}
: > "$out/ops.log"; : > "$out/encoder.log"; : > "$out/backward.log"; : > "$out/train.log"; : > "$out/sparse.log"; : > "$out/sparse24.log"
step 120 dev.topa.kit.CudaOpCheck "$out/ops.log"
rc=$?
step 120 dev.topa.kit.CudaEncoderCheck "$out/encoder.log"
erc=$?
[ $rc -ne 0 ] || rc=$erc
# the op harness on the GPU: every op family's cases against the float64 references, fp32 and mixed
# precision, every kernel choice; then one whole LoRA training step vs the CPU and its time at BERT-base shape
step 150 dev.topa.kit.OpsCheck "$out/backward.log"
erc=$?
[ $rc -ne 0 ] || rc=$erc
step 150 "dev.topa.kit.TrainingStepParity dense" "$out/train.log"
erc=$?
[ $rc -ne 0 ] || rc=$erc
step 60 dev.topa.kit.LoraForwardBench "$out/train.log"
step 90 "dev.topa.kit.TrainingStepParity blocks" "$out/train.log"
erc=$?
[ $rc -ne 0 ] || rc=$erc
step 120 dev.topa.kit.BlockSparseBench "$out/sparse.log"
step 60 dev.topa.kit.Sparse24Check "$out/sparse24.log"
erc=$?
[ $rc -ne 0 ] || rc=$erc
if command -v python3 >/dev/null && python3 -c "import torch, transformers" 2>/dev/null; then
    PYTHONUNBUFFERED=1 timeout 180 python3 "$root/kit/torch_encoder.py" > "$out/torch.log" 2>&1 || echo "torch_encoder: failed (see torch.log)" >> "$out/torch.log"
    PYTHONUNBUFFERED=1 timeout 180 python3 "$root/kit/torch_lora_step.py" >> "$out/torch.log" 2>&1 || echo "torch_lora_step: failed (see torch.log)" >> "$out/torch.log"
else
    echo "torch_encoder: no python3 with torch and transformers here" > "$out/torch.log"
fi
grep -E "rel_error|cuda_" "$out/ops.log" | head -60
echo "---- summary (card: $(head -2 "$out/machine.txt" | tail -1)) ----"
sed -n '/^op | dtype/,$p' "$out/ops.log"
grep -E "^torch" "$out/torch.log" || tail -5 "$out/torch.log"
echo "---- SASS (sm_90a) ----"
cat "$out/sass-summary.txt" 2>/dev/null || echo "sass: no cuobjdump or no fatbin here"
echo "---- encoder (topa CUDA vs CPU backend, then timings) ----"
cat "$out/encoder.log"
echo "---- training ops and step (topa CUDA vs CPU backend, then timings) ----"
grep -E "FAILED|ops_failures|Exception" "$out/backward.log" | head -20
grep -c ": ok$" "$out/backward.log" | sed 's/^/op_harness_cases_ok: /'
grep -E "^attention_backward.*_ms:" "$out/backward.log"
cat "$out/train.log"
# the ratios asked for, same card, same call
ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_b32_s128_bf16_base_bf16_act_ms: //p" "$out/train.log")
theirs=$(sed -n "s/^torch_lora_step_bertbase_b32_s128_bf16_autocast_ms: //p" "$out/torch.log")
[ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "lora_step_speedup_vs_torch_bf16_eager_bertbase_b32_s128: %.3f\n", a / b }'
# the Pruning-Adapter (50% structured, adapters on the pruned backbone) over PyTorch's dense LoRA step
ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_pruned50_b32_s128_bf16_base_bf16_act_ms: //p" "$out/train.log")
[ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "pruning_adapter50_step_speedup_vs_torch_dense_lora_bf16_eager: %.3f\n", a / b }'
# topa's CUDA encoder over PyTorch bf16 eager
for shape in minilm bertbase; do
    ours=$(sed -n "s/^topa_cuda_${shape}_b32_s128_ms: //p" "$out/encoder.log")
    theirs=$(sed -n "s/^torch_${shape}_b32_s128_bf16_ms: //p" "$out/torch.log")
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" -v s="$shape" 'BEGIN { printf "encoder_speedup_vs_torch_bf16_%s_b32_s128: %.3f\n", s, a / b }'
done
echo "---- 2:4 on the sparse tensor cores (mma.sp) vs dense cuBLASLt ----"
cat "$out/sparse24.log"
echo "---- block-sparse on the tensor cores vs dense cuBLASLt ----"
cat "$out/sparse.log"
[ $rc -eq 0 ] || tail -30 "$out/ops.log"
exit $rc
