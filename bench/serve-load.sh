#!/usr/bin/env bash
# Serving under load (issue 8): `topa serve` with a dense fine-tuned model, with the 50% pruned one,
# with that pruned backbone and two tasks' LoRA adapters kept unmerged (multi-task; MRPC requests),
# and ONNX Runtime's Java API serving the dense encoder behind the same server (dev.topa.serve.OrtServe,
# test scope), each in its own process on loopback (OpenMP and ORT threads passive, as `topa serve`); a closed-loop generator (`topa loadtest`) with 1,
# 8 and 32 clients sends MRPC dev pairs for SECONDS after a warm-up. Then a soak: 10,000 requests,
# every second one bad (malformed, empty, oversized, wrong types, unknown task), against the pruned
# model, with the server's resident memory read from /metrics before and after. Prints `name: value`
# lines; the asked figure last: pruned_bf16_p99_over_ort_dense_p99_c8 (the pruned model with bf16
# products; pruned_p99_over_ort_dense_p99_c8 is the same in fp32).
# Usage: bench/serve-load.sh   (env: DENSE=dir PRUNED=dir (default: out/cmp-mrpc/full and out/mrpc,
#        made quickly when missing), SECONDS_PER_RUN=10, THREADS=2, PORT=18080)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
source "$root/bench/ab-lib.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
threads="${THREADS:-2}" seconds="${SECONDS_PER_RUN:-10}" port="${PORT:-18080}"
glue="${GLUE:-$root/../shared/glue}"
work="$root/bench/results/serve"
mkdir -p "$work"
mvn -q -B -f "$root/pom.xml" -pl cli -am -DskipTests package >&2
mvn -q -B -f "$root/java/pom.xml" dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$work/test-classpath.txt" >&2
jar="$root/cli/target/topa-cli.jar"
java=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx4g)
topa() { "${java[@]}" -jar "$jar" "$@"; }
cli=("${java[@]}" -jar "$jar") # servers start from this, not through the function: $! must be the JVM itself
dense="${DENSE:-$root/out/cmp-mrpc/full}" pruned="${PRUNED:-$root/out/mrpc}"
# latency does not depend on how well a model was trained: missing models are made with a short run
[ -f "$dense/task.json" ] || { dense="$work/dense"; [ -f "$dense/task.json" ] || topa finetune --task mrpc --method full --data-dir "$glue" \
    --train-limit 64 --epochs 1 --overwrite --out "$dense" >&2; }
[ -f "$pruned/task.json" ] || { pruned="$work/pruned"; [ -f "$pruned/task.json" ] || topa prune-adapt --task mrpc --data-dir "$glue" \
    --sparsity 0.5 --train-limit 64 --epochs 1 --score-examples 64 --overwrite --out "$pruned" >&2; }
# adapters on the pruned backbone for two tasks: short LoRA runs (latency, not accuracy)
for task in mrpc sst2; do
    [ -f "$work/adapter-$task/adapter.safetensors" ] || topa finetune --model "$pruned" --task "$task" --method lora --data-dir "$glue" \
        --train-limit 64 --epochs 1 --overwrite --out "$work/adapter-$task" >&2
done
inputs="$work/mrpc-dev-pairs.txt"
awk -F'\t' 'NR > 1 && $4 != "" && $5 != "" { print $4 "\t" $5 }' "$glue/MRPC/dev.tsv" > "$inputs"
onnx="$(unzip -Z1 "$jar" | grep -m1 'all-minilm-l6-v2.onnx$' || true)"
mkdir -p "$work/onnx" && (cd "$work/onnx" && unzip -o -q "$jar" "$onnx") && onnx="$work/onnx/$onnx"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "dense: $dense"
echo "pruned: $pruned"

trap stop EXIT
rss_mib() { curl -sf "http://127.0.0.1:$port/metrics" | awk '/^topa_process_resident_bytes/ { printf "%.1f", $2 / 1048576 }'; }
load() { topa loadtest --url "http://127.0.0.1:$port/v1/predict" --inputs "$inputs" --seconds "$seconds" --warmup-seconds 3 "$@"; }

export OMP_WAIT_POLICY=PASSIVE
for engine in topa_dense topa_pruned topa_pruned_bf16 topa_multitask ort_dense; do
    task=()
    case $engine in
        topa_dense) "${cli[@]}" serve --model "$dense" --port "$port" --threads "$threads" > "$work/$engine.log" 2>&1 & ;;
        topa_pruned) "${cli[@]}" serve --model "$pruned" --port "$port" --threads "$threads" > "$work/$engine.log" 2>&1 & ;;
        topa_pruned_bf16) "${cli[@]}" serve --model "$pruned" --precision bf16 --port "$port" --threads "$threads" > "$work/$engine.log" 2>&1 & ;;
        topa_multitask) task=(--task mrpc); "${cli[@]}" serve --backbone "$pruned" --adapters "$work/adapter-mrpc,$work/adapter-sst2" \
            --port "$port" --threads "$threads" > "$work/$engine.log" 2>&1 & ;;
        ort_dense) "${java[@]}" -cp "$root/java/target/classes:$root/java/target/test-classes:$(cat "$work/test-classpath.txt")" \
            dev.topa.serve.OrtServe "$onnx" "$dense" "$port" "$threads" > "$work/$engine.log" 2>&1 & ;;
    esac
    server=$!
    wait_up "$work/$engine.log"
    for clients in 1 8 32; do load --clients "$clients" --name "$engine" "${task[@]}"; done
    stop
done | tee "$work/load.txt"

# soak: 10,000 requests, half of them bad, against the pruned model, after 6,000 that bring the JVM's
# heap and the arenas to their working size (resident memory grows for the first ~6,000, then stays)
"${cli[@]}" serve --model "$pruned" --port "$port" --threads "$threads" > "$work/soak.log" 2>&1 &
server=$!
wait_up "$work/soak.log"
load --clients 8 --requests 6000 --invalid-every 2 --name soak_warmup > /dev/null
echo "soak_rss_start_mib: $(rss_mib)" | tee -a "$work/load.txt"
load --clients 8 --requests 10000 --invalid-every 2 --name soak | tee -a "$work/load.txt"
echo "soak_rss_end_mib: $(rss_mib)" | tee -a "$work/load.txt"
curl -sf "http://127.0.0.1:$port/health" > /dev/null && echo "soak_server_up_after: true" | tee -a "$work/load.txt"
stop
awk -F': ' '{ v[$1] = $2 } END {
    printf "pruned_throughput_over_ort_dense_c8: %.3f\n", v["topa_pruned_c8_throughput_rps"] / v["ort_dense_c8_throughput_rps"];
    printf "dense_p99_over_ort_dense_p99_c8: %.3f\n", v["topa_dense_c8_p99_ms"] / v["ort_dense_c8_p99_ms"];
    printf "multitask_adapters_over_merged_pruned_p50_c1: %.3f\n", v["topa_multitask_c1_p50_ms"] / v["topa_pruned_c1_p50_ms"];
    printf "multitask_adapters_over_merged_pruned_throughput_c8: %.3f\n", v["topa_multitask_c8_throughput_rps"] / v["topa_pruned_c8_throughput_rps"];
    printf "pruned_p99_over_ort_dense_p99_c8: %.3f\n", v["topa_pruned_c8_p99_ms"] / v["ort_dense_c8_p99_ms"];
    printf "soak_rss_growth_mib: %.1f\n", v["soak_rss_end_mib"] - v["soak_rss_start_mib"];
    printf "pruned_bf16_p99_over_ort_dense_p99_c8: %.3f\n", v["topa_pruned_bf16_c8_p99_ms"] / v["ort_dense_c8_p99_ms"];
}' "$work/load.txt"
