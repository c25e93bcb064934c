#!/usr/bin/env bash
# Layer-wise distillation's memory on whole training sets: for each TASK=TEACHER given, one epoch of
# `topa prune-adapt --sparsity $SPARSITY --distill 0.5 --teacher TEACHER --distill-hidden 1` (a run's peak does not
# depend on its epochs: every epoch has the same batches, the longest included, and the same scoring warm-up), and
# `name: value` lines: the run's peak and its peak by phase, the bytes the teacher holds beside the student, and the
# peak's ratio to the teacher's own run's (TEACHER is a `topa finetune --method full` output: dense full fine-tuning
# on the same task and data, its report.json the reference peak); the largest ratio last.
# Usage: bench/layerwise-memory.sh TASK=TEACHER_DIR... [-- extra prune-adapt options]
#   env: DATA (../shared/glue beside the checkout), THREADS (2), SPARSITY (0.5), TRAIN_LIMIT (all), JAR (the checkout's
#        topa-cli.jar, built first; another jar to measure another engine), KEEP (the runs' folder; a temporary one when unset)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
data="${DATA:-$root/../shared/glue}" threads="${THREADS:-2}" sparsity="${SPARSITY:-0.5}" limit="${TRAIN_LIMIT:-all}"
[ "$limit" != all ] || limit=100000000
pairs=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do pairs+=("$1"); shift; done
[ $# -eq 0 ] || shift
[ ${#pairs[@]} -gt 0 ] || { echo "usage: bench/layerwise-memory.sh TASK=TEACHER_DIR... [-- options]" >&2; exit 2; }
for p in "${pairs[@]}"; do
    [ "${p#*=}" != "$p" ] && [ -f "${p#*=}/report.json" ] || { echo "layerwise-memory: '$p' is not TASK=DIR with DIR/report.json (a finetune output)" >&2; exit 2; }
done
jar="${JAR:-}"
if [ -z "$jar" ]; then
    mvn -q -B -f "$root/pom.xml" -DskipTests -pl cli -am package >&2
    jar="$root/cli/target/topa-cli.jar"
fi
work="${KEEP:-$(mktemp -d)}"
mkdir -p "$work"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cp "$jar" "$work/topa.jar.tmp" && mv "$work/topa.jar.tmp" "$work/topa.jar" # a private copy: a build meanwhile does not change it
jar="$work/topa.jar"
built="${JAR:-the checkout at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), threads: $threads, jar: $built"
for p in "${pairs[@]}"; do
    task="${p%%=*}" teacher="${p#*=}" out="$work/${p%%=*}-layerwise"
    "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -jar "$jar" prune-adapt --task "$task" --data-dir "$data" \
        --threads "$threads" --train-limit "$limit" --epochs 1 --sparsity "$sparsity" --inference-iterations 0 --distill 0.5 \
        --teacher "$teacher" --distill-hidden 1 --seed 1 --overwrite --out "$out" "$@" > "$out.log" 2>&1 || { tail -20 "$out.log" >&2; exit 1; }
    python3 - "$task" "$out/report.json" "$out/pruning.json" "$teacher/report.json" <<'PY'
import json, sys
task, run, pruning, dense = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
mib = lambda b: b / 2**20
m = run["memory_cpu"]
for phase, b in m["phase_peaks"].items(): print(f"{task}_layerwise_peak_{phase}_mib: {mib(b):.1f}")
print(f"{task}_layerwise_teacher_held_mib: {mib(pruning['teacher_hidden_weight_bytes']):.1f}")
print(f"{task}_dense_full_peak_mib: {mib(dense['memory_cpu']['total_peak']):.1f}")
print(f"{task}_layerwise_peak_mib: {mib(m['total_peak']):.1f}")
print(f"{task}_layerwise_peak_ratio_to_full: {m['total_peak'] / dense['memory_cpu']['total_peak']:.3f}")
PY
done | tee "$work/lines"
sort -t: -k2 -g <(grep '_layerwise_peak_ratio_to_full:' "$work/lines") | tail -1 | awk -F': ' '{ split($1, t, "_"); print "max_layerwise_peak_ratio_to_full: " $2 " (" t[1] ")" }'
