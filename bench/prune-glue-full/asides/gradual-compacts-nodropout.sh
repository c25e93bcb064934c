#!/usr/bin/env bash
# As gradual-compacts-ab.sh's gradual run with attention dropout off (400 examples, 5 epochs): attention dropout's draws
# follow the element's place among the heads, so the compacted model draws others; without it the two jars' epochs after the
# ramp must agree to the order of float sums.
set -u
J=$(ls -d /usr/lib/jvm/*25*/bin/java | head -1)
G=/work/shared/glue
for jar in old new; do
  [ $jar = old ] && JAR=/work/runs/glue-full/topa.jar || JAR=/work/main/cli/target/topa-cli.jar
  out=/work/runs/ab/nodrop-$jar
  rm -rf $out
  $J --enable-native-access=ALL-UNNAMED -Xmx12g -jar $JAR prune-adapt --task rte --data-dir $G --sparsity 0.5 --attention-dropout 0 \
    --inference-iterations 0 --distill 0.5 --teacher /work/runs/glue-full/rte-full-s2 --seed 2 --schedule gradual --train-limit 400 --epochs 5 \
    --out $out > $out.log 2>&1
  echo "$jar rc=$?"
  grep -h '^epoch [0-9]*: train\|masks final' $out.log
done
