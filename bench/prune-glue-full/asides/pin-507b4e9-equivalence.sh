#!/usr/bin/env bash
# same run on the pinned jar and the working tree's: the students must be the same bytes
set -u
J=$(ls -d /usr/lib/jvm/*25*/bin/java | head -1)
G=/work/shared/glue
for sched in gradual oneshot; do
  for jar in old new; do
    [ $jar = old ] && JAR=/work/runs/glue-full/topa.jar || JAR=/work/main/cli/target/topa-cli.jar
    out=/work/runs/eqv/$sched-$jar
    rm -rf $out
    extra=(); [ $sched = gradual ] && extra=(--schedule gradual)
    /usr/bin/time -f "maxrss_kb: %M" $J --enable-native-access=ALL-UNNAMED -Xmx12g -jar $JAR prune-adapt --task rte --data-dir $G --sparsity 0.5 \
      --inference-iterations 0 --distill 0.5 --teacher /work/runs/glue-full/rte-full-s2 --train-limit 400 --epochs 2 --seed 2 "${extra[@]}" --out $out > $out.log 2>&1
    echo "$sched $jar rc=$? $(grep -h 'peak by phase\|taught' $out.log | tr '\n' ' ') $(grep maxrss $out.log)"
  done
  cmp /work/runs/eqv/$sched-old/model.safetensors /work/runs/eqv/$sched-new/model.safetensors && echo "$sched: identical students"
done
