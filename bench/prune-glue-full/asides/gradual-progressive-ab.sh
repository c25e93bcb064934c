#!/usr/bin/env bash
# The gradual schedule on the record's jar (2822c2f: the masked dense model trains through the ramp, compacted once the
# masks are final) and on the working tree's (compacted at the end of every epoch of the ramp too), the same run: RTE
# seed 2, its first 800 examples, 5 epochs (the ramp, 0.6, ends in epoch 3), the fine-tuned teacher rte-full-s2. Prints
# each epoch's seconds and dev accuracy, the hand-overs, the run's peaks and the students' shapes. Then the one-shot
# schedule on both jars (400 examples, 2 epochs): the students must be the same bytes.
set -u
J=$(ls -d /usr/lib/jvm/*25*/bin/java | head -1)
G=/work/shared/glue
for sched in gradual oneshot; do
  for jar in old new; do
    [ $jar = old ] && JAR=/work/runs/glue-full/topa.jar || JAR=/work/main/cli/target/topa-cli.jar
    out=/work/runs/ab2/$sched-$jar
    rm -rf $out && mkdir -p /work/runs/ab2
    if [ $sched = gradual ]; then extra=(--schedule gradual --train-limit 800 --epochs 5); else extra=(--train-limit 400 --epochs 2); fi
    $J --enable-native-access=ALL-UNNAMED -Xmx12g -jar $JAR prune-adapt --task rte --data-dir $G --sparsity 0.5 \
      --inference-iterations 0 --distill 0.5 --teacher /work/runs/glue-full/rte-full-s2 --seed 2 "${extra[@]}" --out $out > $out.log 2>&1
    echo "$sched $jar rc=$?"
    grep -h '^epoch [0-9]*: train\|masks final\|masks so far\|gradual pruning over\|peak by phase' $out.log
  done
  cmp /work/runs/ab2/$sched-old/model.safetensors /work/runs/ab2/$sched-new/model.safetensors && echo "$sched: identical students"
done
