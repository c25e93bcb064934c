#!/usr/bin/env bash
# Two builds, one run: the benchmark programs behind bench/train.sh, bench/infer.sh and bench/prune.sh
# (TrainBench full / LoRA fp32 / LoRA bf16, InferBench, PruneBench train / infer / blocksparse) from an
# earlier build's benchmarks.jar and from this tree's, one process at a time, alternating A B then
# B A so drift of the machine falls on both. Prints `before_<name>: v` and `after_<name>: v` (the
# median of the rounds), `after_over_before_<name>: r` for every time, and the default LoRA step's
# ratio last. Ratios, not absolute figures, are what compares: measured in one run on one machine.
# Usage: bench/ab.sh BEFORE_BENCHMARKS_JAR   (env: THREADS=2, ROUNDS=2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
source "$root/bench/ab-lib.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
before="${1:?usage: bench/ab.sh BEFORE_BENCHMARKS_JAR}"
threads="${THREADS:-2}" rounds="${ROUNDS:-2}"
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
after="$root/bench/target/benchmarks.jar"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lscpu | sed -n 's/^Model name: *//p' | head -1 | sed 's/^/cpu: /'
run() { # side jar program args...
    local side=$1 jar=$2
    shift 2
    "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -cp "$jar" "$@" 2>/dev/null | grep -E '^[a-z0-9_.-]+: [0-9.]+' \
        | sed "s/^/$side /" >> "$work/lines"
}
programs=("dev.topa.bench.TrainBench full $threads 5" "dev.topa.bench.TrainBench lora-recompute $threads 5"
    "dev.topa.bench.TrainBench lora-recompute-bf16 $threads 5" "dev.topa.bench.InferBench $threads 20"
    "dev.topa.bench.PruneBench train $threads" "dev.topa.bench.PruneBench infer $threads 10" "dev.topa.bench.PruneBench blocksparse $threads 7")
for ((r = 0; r < rounds; r++)); do
    for p in "${programs[@]}"; do
        # shellcheck disable=SC2086
        if ((r % 2 == 0)); then run before "$before" $p; run after "$after" $p; else run after "$after" $p; run before "$before" $p; fi
    done
done
ab_summary "$work/lines" '(seconds|_ms|_per_s|gflops|speedup|_mib)$'
lora=lora-recompute
grep -qw avx512_bf16 /proc/cpuinfo && lora=lora-recompute-bf16
ab_ratio "$work/lines" "${lora}_step_seconds" lora_default_step_after_over_before
