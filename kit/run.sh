#!/usr/bin/env bash
# The GPU kit, run on the device machine in one `run` call (see kit/README.md), in stages, each
# step's exit code checked, all within one time budget (KIT_BUDGET_S, default 540 s):
#   1. sanitizer: compute-sanitizer memcheck, racecheck and synccheck over the op harness's cases
#      (ragged shapes, fp32 and mixed precision, every kernel choice); a tool that refuses the
#      device is reported as refused and the kit goes on;
#   2. parity: every CUDA kernel against the CPU backend, the op harness against float64
#      references, the encoder, whole training steps and 2:4;
#   3. cli: finetune and prune-adapt with their defaults on --device cuda (a small random BERT with
#      the real tokenizer, the first rows of RTE), then eval, then layer-wise distillation on the GPU
#      against the CPU (AdapterDistance), the gradual schedule with that teacher; then the OpenCL backend on every OpenCL
#      device here (the kit carries the ICD loader and CLBlast; the NVIDIA driver's OpenCL library is
#      registered when no ICD file names it): the op harness and finetune --device opencl;
#   4. timings: the op harness's, the LoRA forward, block-sparse vs cuBLASLt (its outputs checked
#      too), PyTorch in the same call.
# Writes two files under $OUT: summary.txt (first lines: pass/fail per stage) and kit-logs.tar.gz
# (every log); prints the summary. Exit 0 all stages pass, 1 a stage failed, 2 no GPU, 3 kit missing.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-/tmp/topa-gpu}"
mkdir -p "$out"
logs="$(mktemp -d)"
start=$(date +%s)
deadline=$((start + ${KIT_BUDGET_S:-540}))
declare -A stage_state
summary="$logs/summary.txt"
finish() {
    {
        for s in sanitizer parity cli timings; do echo "stage $s: ${stage_state[$s]:-not run}"; done
        echo "seconds: $(($(date +%s) - start))"
        cat "$logs/summary-body.txt" 2>/dev/null
    } > "$summary"
    cp "$summary" "$out/summary.txt"
    rm -f "$logs/topa_kernels.fatbin"
    tar -C "$logs" -czf "$out/kit-logs.tar.gz" . 2>/dev/null
    cat "$summary"
}
note() { echo "$*" >> "$logs/summary-body.txt"; }

# ---- the kit: kit/dist/kit.tar.xz unpacked here
kit=/tmp/topa-kit
if [ -f "$root/kit/dist/kit.tar.xz" ]; then
    rm -rf "$kit" && mkdir -p /tmp && { tar -C /tmp -xJf "$root/kit/dist/kit.tar.xz" 2>"$logs/unpack.log" \
        || python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$root/kit/dist/kit.tar.xz" /tmp; }
fi
java="$kit/jre/bin/java"
jar="$kit/topa.jar"
if [ ! -x "$java" ] || [ ! -f "$jar" ]; then
    echo "run.sh: no kit in kit/dist: run kit/build.sh before the call and carry kit/dist" | tee -a "$logs/summary-body.txt"
    finish
    exit 3
fi
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    command -v nvcc >/dev/null && nvcc --version | tail -2 | sed 's/^/nvcc: /' || echo "nvcc: absent"
    echo "java: $("$java" -version 2>&1 | head -1)"
    uname -r | sed 's/^/kernel: /'
} > "$logs/machine.txt"
cat "$logs/machine.txt" >> "$logs/summary-body.txt"
props=()
if ! python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).getinfo('native/linux-x86_64/topa_kernels.fatbin')" "$jar" 2>/dev/null; then
    note "fatbin: not in the kit jar, built here"
    nvcc -std=c++17 -O3 -fatbin -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
        -o "$logs/topa_kernels.fatbin" "$root/cuda-kernels/kernels.cu" > "$logs/nvcc.log" 2>&1 || { note "nvcc failed: see nvcc.log"; finish; exit 1; }
    props+=("-Dtopa.cuda.fatbin=$logs/topa_kernels.fatbin")
fi
# the kernels' SASS as they run here: tensor-core MMAs, 16-byte global loads/stores, local memory (spills) per kernel
fatbin="$logs/topa_kernels.fatbin"
[ -f "$fatbin" ] || python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('native/linux-x86_64/topa_kernels.fatbin'))" \
    "$jar" "$fatbin" 2>/dev/null
if command -v cuobjdump >/dev/null && [ -f "$fatbin" ]; then
    cuobjdump -arch sm_90a -sass "$fatbin" > "$logs/sass.txt" 2>&1
    awk '/Function :/ { f = $3; seen[f] = 1 } /HMMA/ { h[f]++ } /LDG\.E\.128/ { l[f]++ } /STG\.E\.128/ { s[f]++ } /LDL|STL/ { sp[f]++ }
         END { for (k in seen) printf "sass_%s: hmma %d, ldg128 %d, stg128 %d, local %d\n", k, h[k], l[k], s[k], sp[k] }' "$logs/sass.txt" \
        | sort > "$logs/sass-summary.txt"
fi

# step LIMIT LOG CMD...: runs CMD (appending to LOG) within LIMIT seconds and the time left; its exit code (124 timed out, 125 no time left)
step() {
    local limit=$1 log=$2
    shift 2
    local left=$((deadline - $(date +%s) - 15))
    if [ $left -lt 10 ]; then echo "$*: skipped, the kit's time is spent" | tee -a "$log"; return 125; fi
    [ $limit -le $left ] || limit=$left
    echo "---- $* (limit ${limit} s)" >> "$log"
    timeout "$limit" "$@" >> "$log" 2>&1
    local code=$?
    [ $code -ne 124 ] || echo "$*: timed out after ${limit} s" | tee -a "$log"
    return $code
}
jrun=("$java" --enable-native-access=ALL-UNNAMED -XX:+UseSerialGC "${props[@]}" -cp "$jar") # a command (timeout runs no shell function)
# stage_result NAME CODE...: pass when every code is 0
stage_result() {
    local name=$1 bad=0
    shift
    for c in "$@"; do [ "$c" -eq 0 ] || bad=1; done
    [ $bad -eq 0 ] && stage_state[$name]=pass || stage_state[$name]="fail (exit codes: $*)"
}

# ---- 1. sanitizer
if command -v compute-sanitizer >/dev/null; then
    codes=()
    refused=0
    for tool in memcheck racecheck synccheck; do
        log="$logs/sanitizer-$tool.log"
        step 110 "$log" compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
            "${jrun[@]}" dev.topa.kit.OpsCheck check
        code=$?
        if grep -q -E "Device not supported|not supported on this device|Unable to|error 999" "$log" && ! grep -q "ERROR SUMMARY" "$log"; then
            note "sanitizer $tool: refused the device ($(grep -m1 -E "Device not supported|not supported|Unable to|error 999" "$log"))"
            refused=$((refused + 1))
            continue
        fi
        note "sanitizer $tool: exit $code, $(grep -m1 'ERROR SUMMARY' "$log" || echo 'no error summary'), $(grep -m1 'ops_failures' "$log" || echo 'no ops line')"
        codes+=("$code")
    done
    if [ $refused -eq 3 ]; then stage_state[sanitizer]="refused by the device (see below); the kit went on"; else stage_result sanitizer "${codes[@]}"; fi
else
    stage_state[sanitizer]="skipped: no compute-sanitizer here"
fi

# ---- 2. parity
step 90 "$logs/ops.log" "${jrun[@]}" dev.topa.kit.CudaOpCheck; c1=$?
step 90 "$logs/encoder.log" "${jrun[@]}" dev.topa.kit.CudaEncoderCheck; c2=$?
step 90 "$logs/harness.log" "${jrun[@]}" dev.topa.kit.OpsCheck check; c3=$?
step 120 "$logs/train.log" "${jrun[@]}" dev.topa.kit.TrainingStepParity dense; c4=$?
step 60 "$logs/train.log" "${jrun[@]}" dev.topa.kit.TrainingStepParity blocks; c5=$?
step 45 "$logs/sparse24.log" "${jrun[@]}" dev.topa.kit.Sparse24Check; c6=$?
step 45 "$logs/nccl.log" "${jrun[@]}" dev.topa.kit.NcclCheck; c7=$? # one rank here; 3: no libnccl on this machine (said, not a failure)
note "nccl: exit $c7, $(grep -h -E '^nccl_(check|available|version)' "$logs/nccl.log" | tr '\n' ' ')"
[ $c7 -ne 3 ] || c7=0
# the real sum (and the id's broadcast over MPI) needs two ranks: one per GPU where there are two and mpirun
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') # whole GPUs (MIG instances are indented lines), at most the visible ones
[ -z "${CUDA_VISIBLE_DEVICES:-}" ] || gpus=$(( $(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c .) < gpus ? $(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c .) : gpus ))
if [ $c7 -eq 0 ] && grep -q '^nccl_check: pass' "$logs/nccl.log" && command -v mpirun >/dev/null && [ "$gpus" -ge 2 ]; then
    step 60 "$logs/nccl2.log" mpirun --allow-run-as-root --oversubscribe -np 2 "${jrun[@]}" dev.topa.kit.NcclCheck; c7=$?
    note "nccl over 2 ranks: exit $c7, $(grep -h -E '^nccl_(check|allreduce)' "$logs/nccl2.log" | tr '\n' ' ')"
fi
stage_result parity $c1 $c2 $c3 $c4 $c5 $c6 $c7
note "parity: CudaOpCheck $c1, CudaEncoderCheck $c2, op harness $c3 ($(grep -m1 ops_failures "$logs/harness.log")), training step dense $c4 blocks $c5, 2:4 $c6"
grep -h "^FAILED" "$logs/harness.log" | head -20 >> "$logs/summary-body.txt"

# ---- 3. the command line with its defaults on the GPU
cli="$logs/cli"
mkdir -p "$cli"
data=(--task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --device cuda --train-limit 96 --epochs 1)
step 60 "$logs/cli.log" "${jrun[@]}" dev.topa.app.Main finetune "${data[@]}" --out "$cli/finetune"; f1=$?
step 60 "$logs/cli.log" "${jrun[@]}" dev.topa.app.Main prune-adapt "${data[@]}" --score-examples 32 --inference-iterations 2 --out "$cli/prune-adapt"; f2=$?
step 30 "$logs/cli.log" "${jrun[@]}" dev.topa.app.Main eval --model "$cli/finetune" --data-dir "$kit/cli/glue" --device cuda; f3=$?
# layer-wise distillation on the GPU (the fine-tuned model above teaches) against the CPU, the student in fp32 on both (the CPU's
# teacher may multiply in bf16 packs where measured faster): the same student, and the term really ran there (AdapterDistance:
# device-vs-CPU distance under a tenth of the term's own)
lw=(dev.topa.app.Main prune-adapt --task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --train-limit 96 --epochs 1 --score-examples 32
    --inference-iterations 0 --seed 3 --base-precision fp32 --activation-precision fp32 --distill 0.5 --teacher "$cli/finetune")
step 60 "$logs/cli.log" "${jrun[@]}" "${lw[@]}" --distill-hidden 1 --device cuda --out "$cli/layerwise-cuda"; f4=$?
step 60 "$logs/cli.log" "${jrun[@]}" "${lw[@]}" --distill-hidden 1 --device cpu --out "$cli/layerwise-cpu"; f5=$?
step 60 "$logs/cli.log" "${jrun[@]}" "${lw[@]}" --device cpu --out "$cli/outputs-cpu"; f6=$?
[ $((f4 + f5 + f6)) -ne 0 ] || { step 30 "$logs/cli.log" "${jrun[@]}" dev.topa.kit.AdapterDistance "$cli/layerwise-cuda" "$cli/layerwise-cpu" \
    "$cli/outputs-cpu"; f4=$?; }
note "layer-wise on cuda: exit $f4 (runs: cpu $f5, cpu outputs only $f6), $(grep -h -E '^layerwise_' "$logs/cli.log" | tr '\n' ' ')"
# the gradual schedule with the fine-tuned teacher on the GPU with its defaults (fp32 base: its masks zero rows of the weights
# there; read back every step), 3 epochs with the ramp over in the second (11 of 18 steps), so that the run hands over to
# the model compacted to the masks so far after epoch 1 and to the final ones after epoch 2, each trained there: it must
# run to the end (its units may differ from the CPU's where scores nearly tie)
gradual=(--task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --device cuda --train-limit 96 --epochs 3 --ramp 0.6)
step 90 "$logs/cli.log" "${jrun[@]}" dev.topa.app.Main prune-adapt "${gradual[@]}" --score-examples 32 --inference-iterations 0 --schedule gradual \
    --teacher "$cli/finetune" --out "$cli/gradual-cuda"; f7=$?
note "gradual on cuda: exit $f7, $(grep -h -E 'compacted to the masks so far|^the masks final|^gradual pruning' "$logs/cli.log" | tail -3 | tr '\n' ' ')"
# OpenCL: the loader and CLBlast from the kit; NVIDIA's ICD registered if the driver's library is here but no file names it
export LD_LIBRARY_PATH="$kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
    nv=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ && !f { f = $NF } END { print f }')
    if [ -n "$nv" ]; then mkdir -p "$logs/icd" && echo "$nv" > "$logs/icd/nvidia.icd" && export OCL_ICD_VENDORS="$logs/icd"; fi
    note "opencl icd: ${nv:-no /etc/OpenCL/vendors and no libnvidia-opencl.so.1 found}"
fi
step 150 "$logs/opencl.log" "${jrun[@]}" dev.topa.kit.OpenClCheck check; o1=$?
note "opencl: exit $o1 (3: no OpenCL device here), $(grep -h -E '^opencl( |_devices|_failures)' "$logs/opencl.log" | tr '\n' ' ')"
grep -h "^FAILED" "$logs/opencl.log" | head -10 >> "$logs/summary-body.txt"
o2=0
if [ $o1 -ne 3 ]; then
    step 90 "$logs/cli.log" "${jrun[@]}" dev.topa.app.Main finetune "${data[@]/cuda/opencl}" --out "$cli/finetune-opencl"; o2=$?
    note "opencl finetune: exit $o2, $(grep -h -A0 '^epoch 1: train' "$logs/cli.log" | tr '\n' ' ')"
else
    o1=0
fi
stage_result cli $f1 $f2 $f3 $f4 $f5 $f6 $f7 $o1 $o2
note "cli: finetune $f1, prune-adapt $f2, eval $f3, layer-wise $f4, gradual $f7, opencl harness $o1, opencl finetune $o2; $(grep -m1 -E '^accuracy' "$logs/cli.log")"
grep -h -E "Exception|error:" "$logs/cli.log" | head -5 >> "$logs/summary-body.txt"

# ---- 4. timings
step 60 "$logs/train.log" "${jrun[@]}" dev.topa.kit.LoraForwardBench; t1=$?
step 90 "$logs/harness-bench.log" "${jrun[@]}" dev.topa.kit.OpsCheck bench; t2=$?
step 120 "$logs/sparse.log" "${jrun[@]}" dev.topa.kit.BlockSparseBench; t3=$?
stage_result timings $t1 $t2 $t3
note "timings: LoraForwardBench $t1, op timings $t2, BlockSparseBench $t3 (1: an output check failed)"
grep -h "blocksparse_check_failed" "$logs/sparse.log" | head -5 >> "$logs/summary-body.txt"
if python3 -c "import torch, transformers" 2>/dev/null; then
    PYTHONUNBUFFERED=1 step 120 "$logs/torch.log" python3 "$root/kit/torch_encoder.py" || note "torch_encoder: failed (torch.log)"
    PYTHONUNBUFFERED=1 step 120 "$logs/torch.log" python3 "$root/kit/torch_lora_step.py" || note "torch_lora_step: failed (torch.log)"
else
    note "torch: no python3 with torch and transformers here"
fi

# ---- the figures, same card, same call
{
    echo "---- figures"
    grep -h -E "^cuda_ops_all_match|^encoder|^topa_cuda|_rel_error_worst" "$logs/ops.log" "$logs/encoder.log" 2>/dev/null | head -20
    grep -h -E "^topa_cuda|^lora_forward_overhead" "$logs/train.log" 2>/dev/null
    grep -h -E "^torch" "$logs/torch.log" 2>/dev/null
    ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_b32_s128_bf16_base_bf16_act_ms: //p" "$logs/train.log")
    theirs=$(sed -n "s/^torch_lora_step_bertbase_b32_s128_bf16_autocast_ms: //p" "$logs/torch.log" 2>/dev/null)
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "lora_step_speedup_vs_torch_bf16_eager_bertbase_b32_s128: %.3f\n", a / b }'
    ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_pruned50_b32_s128_bf16_base_bf16_act_ms: //p" "$logs/train.log")
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "pruning_adapter50_step_speedup_vs_torch_dense_lora_bf16_eager: %.3f\n", a / b }'
    for shape in minilm bertbase; do
        ours=$(sed -n "s/^topa_cuda_${shape}_b32_s128_ms: //p" "$logs/encoder.log")
        for kind in bf16 bf16_cudagraph; do
            theirs=$(sed -n "s/^torch_${shape}_b32_s128_${kind}_ms: //p" "$logs/torch.log" 2>/dev/null)
            [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" -v s="$shape" -v k="$kind" \
                'BEGIN { printf "encoder_speedup_vs_torch_%s_%s_b32_s128: %.3f\n", k, s, a / b }'
        done
    done
    grep -h -E "^blocksparse_80pct|^formats_" "$logs/sparse.log" 2>/dev/null
    grep -h -E "^sparse24" "$logs/sparse24.log" 2>/dev/null | tail -4
    echo "---- op summary (CudaOpCheck)"
    sed -n '/^op | dtype/,$p' "$logs/ops.log" | head -80
    echo "---- SASS (sm_90a)"
    cat "$logs/sass-summary.txt" 2>/dev/null || echo "sass: no cuobjdump or no fatbin here"
} >> "$logs/summary-body.txt"
finish
for s in sanitizer parity cli timings; do
    case "${stage_state[$s]:-}" in pass | refused* | skipped*) ;; *) exit 1 ;; esac
done
exit 0
