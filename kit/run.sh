#!/usr/bin/env bash
# The GPU kit, run on the device machine (see kit/README.md): stages in the order of KIT_STAGES (default: every stage,
# most telling first), each step's exit code checked, all within one time budget (KIT_BUDGET_S, default 330 s, so that a
# second call -- a rerun after a fix, or the stages the first did not reach -- fits the session's device time):
#   memcheck   compute-sanitizer memcheck over the op harness's cases (ragged shapes, fp32 and mixed precision, every
#              kernel choice); its ops_failures line also stands for parity's harness run; a tool that refuses the
#              device is reported as refused and the kit goes on;
#   parity     every CUDA kernel against the CPU backend, the op harness against float64 references (unless memcheck
#              ran it), the encoder, whole training steps, 2:4, NCCL;
#   cli        finetune and prune-adapt with their defaults on --device cuda (a small random BERT with the real
#              tokenizer, the first rows of RTE), eval, layer-wise distillation on the GPU against the CPU
#              (AdapterDistance), the gradual schedule with that teacher (its mid-ramp compaction required);
#   serve      topa serve on the GPU with two workers sharing the backend, the merged pruned model and the pruned
#              backbone with a LoRA adapter kept unmerged, each under a closed loop with bad requests mixed in;
#   resume     the gradual run killed after its first (mid-ramp, compacted) checkpoint and resumed on the GPU;
#   timings    the op harness's timings, the LoRA forward, block-sparse vs cuBLASLt (outputs checked), PyTorch's;
#   racecheck, synccheck   the slower sanitizer tools over the hand-written kernels' families (blocksparse, attention);
#   opencl     the OpenCL backend on every OpenCL device here (the kit carries the ICD loader and CLBlast; the NVIDIA
#              driver's OpenCL library is registered when no ICD file names it): the op harness, finetune.
# A stage's steps that the budget leaves no time for are skipped and the stage is marked "not reached"; the summary's
# last line names the stages to ask for next (KIT_STAGES="..."). The command line's outputs go to /tmp/topa-kit-work; a
# second call usually starts on a bare machine (it is held 30 s after a call), so serve and resume train what they need.
# KIT_DEVICE=cpu runs the command-line stages on the CPU: their flows checked here, without a GPU.
# Writes under $OUT, after every stage (a call killed at its limit still returns what it had): summary.txt (first lines:
# each stage's state) and kit-logs.tar.gz (every log, no model files); prints a line per step as it goes and the summary
# at the end. Exit 0 every stage asked passed, 1 a stage failed, 2 no GPU (the plumbing ran), 3 kit missing, 4 the
# budget ran out before every stage asked (none failed).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-/tmp/topa-gpu}"
mkdir -p "$out"
logs="$(mktemp -d)"
start=$(date +%s)
deadline=$((start + ${KIT_BUDGET_S:-330}))
stages=(${KIT_STAGES:-memcheck parity cli serve resume timings racecheck synccheck opencl})
declare -A stage_state
summary="$logs/summary.txt"
work=/tmp/topa-kit-work # the command line's inputs and outputs (kept on a warm machine for a later call)
cli="$work/cli"
gpu=0
[ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')" -gt 0 ] && gpu=1
# the device the command-line stages use: KIT_DEVICE=cpu runs their flows here (a dry run of serve and resume too)
dev="${KIT_DEVICE:-cuda}"
say() { echo "[$(($(date +%s) - start)) s] $*"; }
note() { echo "$*" >> "$logs/summary-body.txt"; }

# the figures, same card, same call (where this call timed both sides)
figures() {
    echo "---- figures"
    grep -h -E "^cuda_ops_all_match|^encoder|^topa_cuda|_rel_error_worst" "$logs/ops.log" "$logs/encoder.log" 2>/dev/null | head -20
    grep -h -E "^topa_cuda|^lora_forward_overhead" "$logs/train.log" 2>/dev/null
    grep -h -E "^torch" "$logs/torch.log" 2>/dev/null
    local ours theirs shape kind
    ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_b32_s128_bf16_base_bf16_act_ms: //p" "$logs/train.log" 2>/dev/null)
    theirs=$(sed -n "s/^torch_lora_step_bertbase_b32_s128_bf16_autocast_ms: //p" "$logs/torch.log" 2>/dev/null)
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "lora_step_speedup_vs_torch_bf16_eager_bertbase_b32_s128: %.3f\n", a / b }'
    ours=$(sed -n "s/^topa_cuda_lora_step_bertbase_pruned50_b32_s128_bf16_base_bf16_act_ms: //p" "$logs/train.log" 2>/dev/null)
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" 'BEGIN { printf "pruning_adapter50_step_speedup_vs_torch_dense_lora_bf16_eager: %.3f\n", a / b }'
    for shape in minilm bertbase; do
        ours=$(sed -n "s/^topa_cuda_${shape}_b32_s128_ms: //p" "$logs/encoder.log" 2>/dev/null)
        for kind in bf16 bf16_cudagraph; do
            theirs=$(sed -n "s/^torch_${shape}_b32_s128_${kind}_ms: //p" "$logs/torch.log" 2>/dev/null)
            [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$theirs" -v b="$ours" -v s="$shape" -v k="$kind" \
                'BEGIN { printf "encoder_speedup_vs_torch_%s_%s_b32_s128: %.3f\n", k, s, a / b }'
        done
    done
    grep -h -E "^blocksparse_80pct|^formats_" "$logs/sparse.log" 2>/dev/null
    grep -h -E "^sparse24" "$logs/sparse24.log" 2>/dev/null | tail -4
    echo "---- op summary (CudaOpCheck)"
    sed -n '/^op | dtype/,$p' "$logs/ops.log" 2>/dev/null | head -80
    echo "---- SASS (sm_90a)"
    cat "$logs/sass-summary.txt" 2>/dev/null || echo "sass: no cuobjdump or no fatbin here"
}

# save: summary.txt and the logs into $OUT (after every stage and at exit)
save() {
    figures > "$logs/figures.txt" 2>/dev/null
    local d f # the command line's reports (not its models)
    for d in "$cli"/*/; do
        [ -d "$d" ] || continue
        mkdir -p "$logs/cli/$(basename "$d")"
        for f in report.json report.md pruning.json config.json; do [ ! -f "$d$f" ] || cp "$d$f" "$logs/cli/$(basename "$d")/"; done
    done
    {
        for s in "${stages[@]}"; do echo "stage $s: ${stage_state[$s]:-not run}"; done
        echo "seconds: $(($(date +%s) - start)) of a budget of $((deadline - start))"
        [ $gpu -eq 1 ] || echo "gpu: none here (nvidia-smi lists no GPU): every step ends with 2, the plumbing ran"
        cat "$logs/summary-body.txt" 2>/dev/null
        cat "$logs/figures.txt"
        left=()
        for s in "${stages[@]}"; do case "${stage_state[$s]:-not run}" in pass | refused* | skipped*) ;; *) left+=("$s") ;; esac; done
        [ ${#left[@]} -eq 0 ] || echo "next: KIT_STAGES=\"${left[*]}\" (the stages not passed)"
    } > "$summary.tmp" && mv "$summary.tmp" "$summary"
    cp "$summary" "$out/summary.txt.tmp" && mv "$out/summary.txt.tmp" "$out/summary.txt"
    tar -C "$logs" --exclude='*.safetensors' --exclude=sass.txt --exclude=topa_kernels.fatbin -czf "$out/kit-logs.tar.gz.tmp" . 2>/dev/null \
        && mv "$out/kit-logs.tar.gz.tmp" "$out/kit-logs.tar.gz"
}
finished=0
on_exit() {
    save
    [ $finished -eq 1 ] || echo "run.sh: stopped before its end (killed or failed); summary.txt has what was done" >> "$out/summary.txt"
    cat "$out/summary.txt"
}
trap on_exit EXIT
trap 'exit 143' TERM INT

# step LIMIT LOG CMD...: runs CMD (appending to LOG) within LIMIT seconds and the time left; its exit code (124 timed out,
# 125 no time left)
step() {
    local limit=$1 log=$2
    shift 2
    local left=$((deadline - $(date +%s) - 10))
    if [ $left -lt 10 ]; then echo "$*: skipped, the kit's time is spent" >> "$log"; say "skipped (no time left): ${*: -1}"; return 125; fi
    [ $limit -le $left ] || limit=$left
    echo "---- $* (limit ${limit} s)" >> "$log"
    local label="" a next=0 # the class (and its first argument) or the command
    for a in "$@"; do
        if [ $next -eq 1 ]; then label+=" $a"; break; fi
        case "$a" in dev.topa.*) label="${a##*.}"; next=1 ;; esac
    done
    say "${label:-$1} (limit ${limit} s)"
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1
    local code=$?
    [ $code -ne 124 ] && [ $code -ne 137 ] || echo "$*: timed out after ${limit} s" | tee -a "$log"
    return $code
}
# stage_result NAME CODE...: pass when every code is 0; not reached when a step found no time left; no GPU where a step
# said so on a machine without one
stage_result() {
    local name=$1 bad=0 late=0 nogpu=0
    shift
    for c in "$@"; do
        case "$c" in 0) ;; 125) late=1 ;; 2) [ $gpu -eq 0 ] && nogpu=1 || bad=1 ;; *) bad=1 ;; esac
    done
    if [ $bad -eq 1 ]; then stage_state[$name]="fail (exit codes: $*)"
    elif [ $late -eq 1 ]; then stage_state[$name]="not reached: the budget ran out (exit codes: $*)"
    elif [ $nogpu -eq 1 ]; then stage_state[$name]="no GPU (exit codes: $*)"
    else stage_state[$name]=pass; fi
    save
}

# ---- the kit: kit/dist/kit.tar.xz unpacked here
kit=/tmp/topa-kit
if [ -f "$root/kit/dist/kit.tar.xz" ]; then
    rm -rf "$kit" && mkdir -p /tmp && { tar -C /tmp -xJf "$root/kit/dist/kit.tar.xz" 2>"$logs/unpack.log" \
        || python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$root/kit/dist/kit.tar.xz" /tmp; }
fi
java="$kit/jre/bin/java"
jar="$kit/topa.jar"
if [ ! -x "$java" ] || [ ! -f "$jar" ]; then
    note "run.sh: no kit in kit/dist: run kit/build.sh before the call and carry kit/dist"
    finished=1
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
say "kit unpacked; stages: ${stages[*]}"
props=()
fatbin="$logs/topa_kernels.fatbin"
if ! python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).getinfo('native/linux-x86_64/topa_kernels.fatbin')" "$jar" 2>/dev/null; then
    note "fatbin: not in the kit jar, built here"
    step 120 "$logs/nvcc.log" nvcc -std=c++17 -O3 -fatbin -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
        -o "$fatbin" "$root/cuda-kernels/kernels.cu" || { note "nvcc failed: see nvcc.log"; exit 1; }
    props+=("-Dtopa.cuda.fatbin=$fatbin")
fi
# the kernels' SASS as they run here: tensor-core MMAs, 16-byte global loads/stores, local memory (spills) per kernel
[ -f "$fatbin" ] || python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('native/linux-x86_64/topa_kernels.fatbin'))" \
    "$jar" "$fatbin" 2>/dev/null
if command -v cuobjdump >/dev/null && [ -f "$fatbin" ]; then
    timeout -k 5 30 cuobjdump -arch sm_90a -sass "$fatbin" > "$logs/sass.txt" 2>&1
    awk '/Function :/ { f = $3; seen[f] = 1 } /HMMA/ { h[f]++ } /LDG\.E\.128/ { l[f]++ } /STG\.E\.128/ { s[f]++ } /LDL|STL/ { sp[f]++ }
         END { for (k in seen) printf "sass_%s: hmma %d, ldg128 %d, stg128 %d, local %d\n", k, h[k], l[k], s[k], sp[k] }' "$logs/sass.txt" \
        | sort > "$logs/sass-summary.txt"
fi
jrun=("$java" --enable-native-access=ALL-UNNAMED -XX:+UseSerialGC "${props[@]}" -cp "$jar") # a command (timeout runs no shell function)
topa=("${jrun[@]}" dev.topa.app.Main)

mkdir -p "$cli"
data=(--task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --train-limit 96 --epochs 1)
# the gradual schedule with the fine-tuned teacher on the GPU with its defaults (fp32 base: its masks zero rows of the
# weights there; read back every step), 3 epochs with the ramp over in the second (5 of 9 steps), so that the run hands
# over to the model compacted to the masks so far after epoch 1 and to the final ones after epoch 2, each trained there
gradual=(prune-adapt --task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --device "$dev" --train-limit 96 --epochs 3 --ramp 0.6
    --score-examples 32 --inference-iterations 0 --schedule gradual --teacher "$cli/finetune")
# the fine-tuned model the other command-line checks start from (trained by the cli stage, or here when a call skips it)
teacher() {
    [ -f "$cli/finetune/task.json" ] && return 0
    rm -rf "$cli/finetune"
    step 60 "$logs/cli.log" "${topa[@]}" finetune "${data[@]}" --device "$dev" --out "$cli/finetune"
}

sanitize() { # sanitize TOOL LIMIT [FAMILY...]: the op harness's cases under compute-sanitizer TOOL
    local tool=$1 limit=$2
    shift 2
    if ! command -v compute-sanitizer >/dev/null; then stage_state[$tool]="skipped: no compute-sanitizer here"; save; return; fi
    local log="$logs/sanitizer-$tool.log"
    step "$limit" "$log" compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 "${jrun[@]}" dev.topa.kit.OpsCheck check "$@"
    local code=$?
    # a refusal (gVisor machines: "Device not supported", then error 999) may still end with an error summary
    if grep -q -E "Device not supported|not supported on this device" "$log" \
        || { grep -q -E "Unable to|error 999" "$log" && ! grep -q "ERROR SUMMARY" "$log"; }; then
        note "sanitizer $tool: refused the device ($(grep -m1 -E "Device not supported|not supported|Unable to|error 999" "$log"))"
        stage_state[$tool]="refused by the device (see below); the kit went on"
        save
        return
    fi
    note "sanitizer $tool${1:+ ($*)}: exit $code, $(grep -m1 'ERROR SUMMARY' "$log" || echo 'no error summary'), $(grep -m1 'ops_failures' "$log" || echo 'no ops line')"
    # out of time before its summary: not finished, not failed (a second call may give it the time)
    if { [ $code -eq 124 ] || [ $code -eq 137 ]; } && ! grep -q "ERROR SUMMARY" "$log"; then code=125; fi
    stage_result "$tool" $code
}

stage_parity() {
    step 90 "$logs/ops.log" "${jrun[@]}" dev.topa.kit.CudaOpCheck; local c1=$?
    step 90 "$logs/encoder.log" "${jrun[@]}" dev.topa.kit.CudaEncoderCheck; local c2=$?
    # the op harness: memcheck ran every case already where it finished with its ops line and no sanitizer error
    local c3 harness="$logs/harness.log"
    if grep -q '^ops_failures: 0' "$logs/sanitizer-memcheck.log" 2>/dev/null && grep -q 'ERROR SUMMARY: 0 errors' "$logs/sanitizer-memcheck.log"; then
        harness="$logs/sanitizer-memcheck.log"
        c3=0
    else
        step 90 "$harness" "${jrun[@]}" dev.topa.kit.OpsCheck check; c3=$?
    fi
    step 120 "$logs/train.log" "${jrun[@]}" dev.topa.kit.TrainingStepParity dense; local c4=$?
    step 60 "$logs/train.log" "${jrun[@]}" dev.topa.kit.TrainingStepParity blocks; local c5=$?
    step 45 "$logs/sparse24.log" "${jrun[@]}" dev.topa.kit.Sparse24Check; local c6=$?
    step 45 "$logs/nccl.log" "${jrun[@]}" dev.topa.kit.NcclCheck; local c7=$? # one rank here; 3: no libnccl on this machine (said, not a failure)
    note "nccl: exit $c7, $(grep -h -E '^nccl_(check|available|version)' "$logs/nccl.log" | tr '\n' ' ')"
    [ $c7 -ne 3 ] || c7=0
    # the real sum (and the id's broadcast over MPI) needs two ranks: one per GPU where there are two and mpirun
    local gpus
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') # whole GPUs (MIG instances are indented lines), at most the visible ones
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        local visible
        visible=$(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c .)
        [ "$visible" -ge "$gpus" ] || gpus=$visible
    fi
    if [ $c7 -eq 0 ] && grep -q '^nccl_check: pass' "$logs/nccl.log" && command -v mpirun >/dev/null && [ "$gpus" -ge 2 ]; then
        step 60 "$logs/nccl2.log" mpirun --allow-run-as-root --oversubscribe -np 2 "${jrun[@]}" dev.topa.kit.NcclCheck; c7=$?
        note "nccl over 2 ranks: exit $c7, $(grep -h -E '^nccl_(check|allreduce)' "$logs/nccl2.log" | tr '\n' ' ')"
    fi
    note "parity: CudaOpCheck $c1, CudaEncoderCheck $c2, op harness $c3 ($(grep -m1 ops_failures "$harness")$([ "$harness" = "$logs/harness.log" ] || echo ', from memcheck')), training step dense $c4 blocks $c5, 2:4 $c6"
    grep -h "^FAILED" "$harness" | head -20 >> "$logs/summary-body.txt"
    stage_result parity $c1 $c2 $c3 $c4 $c5 $c6 $c7
}

stage_cli() {
    rm -rf "$cli/finetune"
    teacher; local f1=$?
    rm -rf "$cli/prune-adapt"
    step 60 "$logs/cli.log" "${topa[@]}" prune-adapt "${data[@]}" --device "$dev" --score-examples 32 --inference-iterations 2 --out "$cli/prune-adapt"; local f2=$?
    step 30 "$logs/cli.log" "${topa[@]}" eval --model "$cli/finetune" --data-dir "$kit/cli/glue" --device "$dev"; local f3=$?
    # layer-wise distillation on the GPU (the fine-tuned model above teaches) against the CPU, the student in fp32 on both
    # (the CPU's teacher may multiply in bf16 packs where measured faster): the same student, and the term really ran there
    # (AdapterDistance: device-vs-CPU distance under a tenth of the term's own)
    local lw=(prune-adapt --task rte --data-dir "$kit/cli/glue" --model "$kit/cli/model" --train-limit 96 --epochs 1 --score-examples 32
        --inference-iterations 0 --seed 3 --base-precision fp32 --activation-precision fp32 --distill 0.5 --teacher "$cli/finetune")
    rm -rf "$cli/layerwise-cuda" "$cli/layerwise-cpu" "$cli/outputs-cpu"
    step 60 "$logs/cli.log" "${topa[@]}" "${lw[@]}" --distill-hidden 1 --device "$dev" --out "$cli/layerwise-cuda"; local f4=$?
    step 60 "$logs/cli.log" "${topa[@]}" "${lw[@]}" --distill-hidden 1 --device cpu --out "$cli/layerwise-cpu"; local f5=$?
    step 60 "$logs/cli.log" "${topa[@]}" "${lw[@]}" --device cpu --out "$cli/outputs-cpu"; local f6=$?
    [ $((f4 + f5 + f6)) -ne 0 ] || { step 30 "$logs/cli.log" "${jrun[@]}" dev.topa.kit.AdapterDistance "$cli/layerwise-cuda" "$cli/layerwise-cpu" \
        "$cli/outputs-cpu"; f4=$?; }
    note "layer-wise on $dev: exit $f4 (runs: cpu $f5, cpu outputs only $f6), $(grep -h -E '^layerwise_' "$logs/cli.log" | tr '\n' ' ')"
    # the gradual run must reach its end having trained a mid-ramp compacted model there (its units may differ from the
    # CPU's where scores nearly tie)
    rm -rf "$cli/gradual-cuda"
    step 90 "$logs/gradual.log" "${topa[@]}" "${gradual[@]}" --out "$cli/gradual-cuda"; local f7=$?
    if [ $f7 -eq 0 ] && ! grep -q "after epoch 1 the adapters train on in the model compacted to the masks so far" "$logs/gradual.log"; then
        note "gradual on $dev: exited 0 without the mid-ramp compaction after epoch 1 (gradual.log)"
        f7=1
    fi
    note "gradual on $dev: exit $f7, $(grep -h -E 'compacted to the masks so far|^the masks final|^gradual pruning' "$logs/gradual.log" | tail -3 | tr '\n' ' ')"
    # predict and encode on the GPU: the pruned model's label for a pair; the default-shaped small model's states
    step 30 "$logs/cli.log" "${topa[@]}" predict --model "$cli/prune-adapt" --device "$dev" "A cat sat on the mat." "A cat was sitting."; local f8=$?
    printf 'a gripping film with a thin plot\nok\n' > "$work/encode-in.txt"
    step 30 "$logs/cli.log" "${topa[@]}" encode --model "$kit/cli/model" --device "$dev" --input "$work/encode-in.txt" --pooled \
        --output "$work/encoded.safetensors"; local f9=$?
    note "cli: finetune $f1, prune-adapt $f2, eval $f3, layer-wise $f4, gradual $f7, predict $f8, encode $f9; $(grep -m1 -E '^accuracy' "$logs/cli.log")"
    grep -h -E "Exception|error:" "$logs/cli.log" "$logs/gradual.log" | head -5 >> "$logs/summary-body.txt"
    stage_result cli $f1 $f2 $f3 $f4 $f5 $f6 $f7 $f8 $f9
}

# serve_check NAME LOG SERVE-ARGS...: topa serve on the GPU (port chosen by the system), 300 requests from 4 clients with every
# 5th a bad one; 0 when every valid request was answered and the server stopped cleanly
serve_check() {
    local name=$1 log=$2 port="" i
    shift 2
    local clients=4 # loadtest names its lines NAME_cCLIENTS_...
    if [ $((deadline - $(date +%s))) -lt 70 ]; then say "skipped (no time left): serve $name"; return 125; fi
    say "serve: $name"
    "${topa[@]}" serve "$@" --device "$dev" --workers 2 --port 0 > "$log" 2>&1 &
    local pid=$!
    for i in $(seq 1 120); do
        port=$(sed -n 's|^serving .* on http://[^:]*:\([0-9]*\) .*|\1|p' "$log" | head -1)
        [ -n "$port" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.25
    done
    local code=1
    if [ -n "$port" ]; then
        step 40 "$log.load" "${topa[@]}" loadtest --url "http://127.0.0.1:$port/v1/predict" --inputs "$work/rte-pairs.txt" --clients $clients \
            --requests 300 --invalid-every 5 --warmup-seconds 1 --name "$name"
        code=$?
        [ $code -ne 0 ] || grep -q "^${name}_c${clients}_valid_requests_5xx_or_failed: 0$" "$log.load" || code=1
        kill -TERM $pid 2>/dev/null
        for i in $(seq 1 80); do kill -0 $pid 2>/dev/null || break; sleep 0.25; done
        if kill -0 $pid 2>/dev/null; then kill -9 $pid; code=1; echo "the server did not stop within 20 s of SIGTERM" >> "$log"; fi
        wait $pid 2>/dev/null
    else
        kill -9 $pid 2>/dev/null
        echo "no 'serving ... on http://host:port' line" >> "$log"
    fi
    note "serve $name: exit $code, $(grep -h -E "^${name}_c${clients}_(requests_ok|p99_ms|valid_requests_5xx_or_failed|invalid_requests_answered_4xx)" "$log.load" 2>/dev/null | tr '\n' ' ')"
    return $code
}

stage_serve() {
    tail -n +2 "$kit/cli/glue/RTE/dev.tsv" | cut -f2,3 > "$work/rte-pairs.txt"
    [ -f "$cli/prune-adapt/task.json" ] || step 60 "$logs/cli.log" "${topa[@]}" prune-adapt "${data[@]}" --device "$dev" --score-examples 32 \
        --inference-iterations 0 --out "$cli/prune-adapt"
    local s1=$?
    # a LoRA fine-tuning of the pruned backbone, kept unmerged on the GPU by the multi-task server
    rm -rf "$cli/adapter-rte"
    step 60 "$logs/serve.log" "${topa[@]}" finetune --task rte --data-dir "$kit/cli/glue" --model "$cli/prune-adapt" --method lora --device "$dev" \
        --train-limit 64 --epochs 1 --out "$cli/adapter-rte"; local s2=$?
    serve_check serve_pruned "$logs/serve-pruned.log" --model "$cli/prune-adapt"; local s3=$?
    serve_check serve_adapters "$logs/serve-adapters.log" --backbone "$cli/prune-adapt" --adapters "$cli/adapter-rte"; local s4=$?
    stage_result serve $s1 $s2 $s3 $s4
}

stage_resume() {
    teacher; local r0=$?
    [ -f "$cli/gradual-cuda/report.json" ] || { rm -rf "$cli/gradual-cuda"; step 90 "$logs/gradual.log" "${topa[@]}" "${gradual[@]}" --out "$cli/gradual-cuda"; }
    local r1=$? r2=1 killed="$cli/gradual-killed" log="$logs/resume.log"
    rm -rf "$killed"
    if [ $((deadline - $(date +%s))) -lt 60 ]; then stage_result resume $r0 $r1 125; return; fi
    say "resume: the gradual run, killed after its first checkpoint"
    "${topa[@]}" "${gradual[@]}" --out "$killed" > "$logs/resume-killed.log" 2>&1 &
    local pid=$! i
    for i in $(seq 1 1200); do
        [ ! -f "$killed/checkpoint.safetensors" ] || break # written by rename after each epoch: kill at the first one
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if [ -f "$killed/checkpoint.safetensors" ] && [ ! -f "$killed/report.json" ]; then
        step 90 "$log" "${topa[@]}" "${gradual[@]}" --out "$killed" --resume; r2=$?
        [ $r2 -ne 0 ] || grep -q "resumed after epoch [12]" "$log" || r2=1 # epoch 2 where the kill came late: also mid-schedule
        local same="differ (float order on the device: the dev metrics below)"
        cmp -s "$cli/gradual-cuda/model.safetensors" "$killed/model.safetensors" && same="identical to the unbroken run's, byte for byte"
        note "resume on $dev: exit $r2, $(grep -m1 -o 'resumed after epoch [0-9]*' "$log"); the resumed model $same; best dev unbroken $(sed -n 's/.*"best_dev" *: *\([0-9.]*\).*/\1/p' "$cli/gradual-cuda/pruning.json" | head -1), resumed $(sed -n 's/.*"best_dev" *: *\([0-9.]*\).*/\1/p' "$killed/pruning.json" | head -1)"
    else
        note "resume on $dev: the killed run ended before it could be killed, or left no checkpoint (resume-killed.log)"
    fi
    stage_result resume $r0 $r1 $r2
}

stage_timings() {
    step 60 "$logs/train.log" "${jrun[@]}" dev.topa.kit.LoraForwardBench; local t1=$?
    step 90 "$logs/harness-bench.log" "${jrun[@]}" dev.topa.kit.OpsCheck bench; local t2=$?
    step 120 "$logs/sparse.log" "${jrun[@]}" dev.topa.kit.BlockSparseBench; local t3=$?
    # the command line's training benchmark on the GPU (the small model: the path, not a figure)
    step 45 "$logs/bench-train.log" "${topa[@]}" bench train --model "$kit/cli/model" --device "$dev" --steps 5; local t4=$?
    note "timings: LoraForwardBench $t1, op timings $t2, BlockSparseBench $t3 (1: an output check failed), bench train $t4"
    grep -h "blocksparse_check_failed" "$logs/sparse.log" | head -5 >> "$logs/summary-body.txt"
    if [ $((deadline - $(date +%s))) -lt 40 ]; then
        note "torch: no time left for PyTorch's scripts"
    elif python3 -c "import torch, transformers" 2>/dev/null; then
        PYTHONUNBUFFERED=1 step 120 "$logs/torch.log" python3 "$root/kit/torch_encoder.py" || note "torch_encoder: failed (torch.log)"
        PYTHONUNBUFFERED=1 step 120 "$logs/torch.log" python3 "$root/kit/torch_lora_step.py" || note "torch_lora_step: failed (torch.log)"
    else
        note "torch: no python3 with torch and transformers here"
    fi
    stage_result timings $t1 $t2 $t3 $t4
}

stage_opencl() {
    # the loader and CLBlast from the kit; NVIDIA's ICD registered if the driver's library is here but no file names it
    export LD_LIBRARY_PATH="$kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
        local nv d
        nv=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ && !f { f = $NF } END { print f }')
        for d in /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64 /usr/local/cuda/compat; do
            [ -n "$nv" ] || [ ! -e "$d/libnvidia-opencl.so.1" ] || nv="$d/libnvidia-opencl.so.1"
        done
        if [ -n "$nv" ]; then mkdir -p "$logs/icd" && echo "$nv" > "$logs/icd/nvidia.icd" && export OCL_ICD_VENDORS="$logs/icd"; fi
        note "opencl icd: ${nv:-no /etc/OpenCL/vendors and no libnvidia-opencl.so.1 found}"
    fi
    step 150 "$logs/opencl.log" "${jrun[@]}" dev.topa.kit.OpenClCheck check; local o1=$?
    note "opencl: exit $o1 (3: no OpenCL device here), $(grep -h -E '^opencl( |_devices|_failures)' "$logs/opencl.log" | tr '\n' ' ')"
    grep -h "^FAILED" "$logs/opencl.log" | head -10 >> "$logs/summary-body.txt"
    local o2=0
    if [ $o1 -eq 3 ]; then
        stage_state[opencl]="skipped: no OpenCL device here (opencl.log)"
        save
        return
    fi
    rm -rf "$cli/finetune-opencl"
    step 90 "$logs/opencl.log" "${topa[@]}" finetune "${data[@]}" --device opencl --out "$cli/finetune-opencl"; o2=$?
    note "opencl finetune: exit $o2, $(grep -h '^epoch 1: train' "$logs/opencl.log" | tr '\n' ' ')"
    stage_result opencl $o1 $o2
}


for s in "${stages[@]}"; do
    case "$s" in
        memcheck) sanitize memcheck 90 ;;
        racecheck | synccheck) sanitize "$s" 90 blocksparse attention ;;
        parity) stage_parity ;;
        cli) stage_cli ;;
        serve) stage_serve ;;
        resume) stage_resume ;;
        timings) stage_timings ;;
        opencl) stage_opencl ;;
        *) note "run.sh: unknown stage '$s' (memcheck parity cli serve resume timings racecheck synccheck opencl)"; stage_state[$s]="fail (unknown)" ;;
    esac
done
finished=1
code=0
for s in "${stages[@]}"; do
    case "${stage_state[$s]:-}" in
        pass | refused* | skipped*) ;;
        "no GPU"*) [ $code -ne 0 ] || code=2 ;;
        "not reached"*) [ $code -eq 1 ] || code=4 ;;
        *) code=1 ;;
    esac
done
[ $gpu -eq 1 ] || code=2 # the plumbing ran; nothing was checked on a GPU
exit $code
