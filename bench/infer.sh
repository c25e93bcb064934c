#!/usr/bin/env bash
# Encoder inference on the default model (all-MiniLM-L6-v2): topa vs ONNX Runtime Java, same
# threads, one process. Prints `name: value` lines; the last two are the ratios the issue asks for
# (latency: topa / ORT, lower is better; throughput: topa / ORT, higher is better).
# Usage: bench/infer.sh   (env: THREADS=2, ITERATIONS=20)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx4g -cp "$root/bench/target/benchmarks.jar" \
    dev.topa.bench.InferBench "${THREADS:-2}" "${ITERATIONS:-20}" 2>/dev/null
