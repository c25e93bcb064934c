#!/usr/bin/env bash
# Encoder inference on the default model (all-MiniLM-L6-v2): topa vs ONNX Runtime Java, same
# threads, one process; topa also with the precision it measures faster here (`serve --precision
# auto`); then PyTorch (Debian python3-torch, random weights of the same shape) in fp32 and under
# bf16 autocast in its own process. Prints `name: value` lines; the last two are the ratios the issue
# asks for (latency: topa / ORT, lower is better; throughput: topa / ORT, higher is better).
# Usage: bench/infer.sh   (env: THREADS=2, ITERATIONS=20)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx4g -cp "$root/bench/target/benchmarks.jar" \
    dev.topa.bench.InferBench "${THREADS:-2}" "${ITERATIONS:-20}" 2>/dev/null > "$out"
head -n -2 "$out" # the asked ratios stay last
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
    (cd "$root/bench/reference" && OMP_NUM_THREADS="${THREADS:-2}" /usr/bin/python3 infer_step.py "${ITERATIONS:-20}") > "$out.py"
    cat "$out.py"
    cat "$out" "$out.py" | awk -F': ' '{ v[$1] = $2 } END {
        printf "infer_b32_chosen_over_pytorch_bf16: %.3f\n", v["infer_b32_s128_topa_chosen_seq_per_s"] / v["infer_b32_s128_pytorch_bf16_seq_per_s"]
        printf "infer_b32_chosen_over_pytorch_fp32: %.3f\n", v["infer_b32_s128_topa_chosen_seq_per_s"] / v["infer_b32_s128_pytorch_seq_per_s"]
    }'
    rm -f "$out.py"
else
    echo "pytorch: not installed (apt-get install python3-torch)"
fi
tail -n 2 "$out"
