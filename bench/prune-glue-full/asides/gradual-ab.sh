#!/usr/bin/env bash
# The gradual schedule on an older jar and on the working tree's (cli/target/topa-cli.jar), the same run: RTE seed 2, its
# first 800 examples, 5 epochs (the ramp, 0.6, ends in epoch 3), the fine-tuned teacher rte-full-s2. Prints each epoch's
# seconds and dev accuracy, the hand-overs, the run's peaks and the students' shapes. Then the one-shot schedule on both
# jars (400 examples, 2 epochs): the students must be the same bytes.
# Usage: gradual-ab.sh OLD_JAR [OUT]   (OUT: where the four runs go, default /work/runs/gradual-ab)
#   env: SCHEDULES (default "gradual oneshot"), EXTRA (more options for every run, e.g. "--attention-dropout 0")
#   gradual-compacts-ab.out: OLD_JAR topa-1351bd9.jar (masked to the end), the working tree at 2822c2f (compacted once final)
#   gradual-progressive-ab.out: OLD_JAR topa-2822c2f.jar, the working tree at a897e7a (compacted at every epoch's end of the ramp)
set -u
old=${1:?usage: gradual-ab.sh OLD_JAR [OUT]} out=${2:-/work/runs/gradual-ab}
J=$(ls -d /usr/lib/jvm/*25*/bin/java | head -1)
G=/work/shared/glue
mkdir -p "$out"
for sched in ${SCHEDULES:-gradual oneshot}; do
  for jar in old new; do
    [ $jar = old ] && JAR=$old || JAR=$(dirname "$0")/../../../cli/target/topa-cli.jar
    run=$out/$sched-$jar
    rm -rf "$run"
    if [ $sched = gradual ]; then extra=(--schedule gradual --train-limit 800 --epochs 5); else extra=(--train-limit 400 --epochs 2); fi
    $J --enable-native-access=ALL-UNNAMED -Xmx12g -jar "$JAR" prune-adapt --task rte --data-dir $G --sparsity 0.5 \
      --inference-iterations 0 --distill 0.5 --teacher /work/runs/glue-full/rte-full-s2 --seed 2 "${extra[@]}" ${EXTRA:-} --out "$run" > "$run.log" 2>&1
    echo "$sched $jar rc=$?"
    grep -h '^epoch [0-9]*: train\|masks final\|masks so far\|gradual pruning over\|peak by phase' "$run.log"
  done
  cmp "$out/$sched-old/model.safetensors" "$out/$sched-new/model.safetensors" && echo "$sched: identical students"
done
