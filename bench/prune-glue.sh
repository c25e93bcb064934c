#!/usr/bin/env bash
# The Pruning-Adapter's accuracy (issue 5): on CoLA, SST-2, MRPC, STS-B and RTE, dense full
# fine-tuning (`topa finetune --method full`) vs topa's Pruning-Adapter at 50% structured sparsity
# (`topa prune-adapt --sparsity 0.5`: LoRA warm-up scores heads and FFN neurons, half of each is
# removed, LoRA trains on the frozen pruned backbone), each with its task defaults, on the first
# TRAIN_LIMIT training examples (the whole dev set). Every run is its own process, one after the
# other, from one private copy of the jar (edits to the checkout during the run do not touch it).
# Prints `name: value` lines per task as it goes (best dev main metric of each method, the gap in
# GLUE points), then avg_metric_gap_points_50 last: mean over the five tasks of
# (full - pruning-adapter) best dev main metric, x 100 (positive: the pruned model is behind).
# Usage: bench/prune-glue.sh [extra options for both commands]
#   env: DATA (default ../shared/glue beside the checkout), THREADS (2), TRAIN_LIMIT (2000),
#        TASKS ("cola sst2 mrpc stsb rte"), SPARSITY (0.5), KEEP (a folder to keep the runs in; a run whose
#        report.json is already there is reused, so an interrupted KEEP run resumes)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
data="${DATA:-$root/../shared/glue}"
threads="${THREADS:-2}" limit="${TRAIN_LIMIT:-2000}" sparsity="${SPARSITY:-0.5}"
tasks="${TASKS:-cola sst2 mrpc stsb rte}"
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
work="${KEEP:-$(mktemp -d)}"
mkdir -p "$work"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
[ -f "$work/topa.jar" ] || cp "$root/cli/target/topa-cli.jar" "$work/topa.jar"
topa=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -jar "$work/topa.jar")
best() { # report.json -> best dev value of the task's main metric
    /usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("%.4f" % r["best"][r["main_metric"]])' "$1"
}
sum=0 n=0
for t in $tasks; do
    [ -f "$work/$t-full/report.json" ] || "${topa[@]}" finetune --task "$t" --method full --data-dir "$data" --threads "$threads" \
        --train-limit "$limit" --overwrite --out "$work/$t-full" "$@" > "$work/$t-full.log" 2>&1 || { tail -20 "$work/$t-full.log" >&2; exit 1; }
    [ -f "$work/$t-pa/report.json" ] || "${topa[@]}" prune-adapt --task "$t" --sparsity "$sparsity" --data-dir "$data" --threads "$threads" \
        --train-limit "$limit" --inference-iterations 0 --overwrite --out "$work/$t-pa" "$@" > "$work/$t-pa.log" 2>&1 \
        || { tail -20 "$work/$t-pa.log" >&2; exit 1; }
    full="$(best "$work/$t-full/report.json")" pa="$(best "$work/$t-pa/report.json")"
    gap="$(awk -v a="$full" -v b="$pa" 'BEGIN { printf "%.2f", 100 * (a - b) }')"
    echo "${t}_full_best: $full"
    echo "${t}_prune_adapt_best: $pa"
    echo "${t}_gap_points: $gap"
    echo "${t}_encoder_parameters_removed_pct: $(grep -m1 -oE '[0-9.]+% removed' "$work/$t-pa.log" | tr -dc '0-9.')"
    sum="$(awk -v s="$sum" -v g="$gap" 'BEGIN { print s + g }')" n=$((n + 1))
done
awk -v s="$sum" -v n="$n" -v p="$sparsity" 'BEGIN { printf "avg_metric_gap_points_%d: %.2f\n", 100 * p + 0.5, s / n }'
