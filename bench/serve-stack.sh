#!/usr/bin/env bash
# The HTTP stack under `topa serve`, measured both ways in one run: the server of an earlier build
# (BEFORE_CLI_JAR, e.g. the JDK's com.sun.net.httpserver) and this tree's (Netty), each serving the
# same model in its own process on loopback (OpenMP passive, as `topa serve`), alternating A B then
# B A over ROUNDS; a closed-loop generator (this tree's `topa loadtest`) with 1, 8 and 32 clients
# sends MRPC dev pairs. Prints `before_<figure>: v`, `after_<figure>: v` (medians over rounds) and
# `after_over_before_<figure>: r`; the asked figure last: after_over_before_s_c8_p99_ms.
# Usage: bench/serve-stack.sh BEFORE_CLI_JAR   (env: MODEL=dir (default: out/mrpc, made quickly when
#        missing), SECONDS_PER_RUN=10, ROUNDS=2, THREADS=2, PORT=18090)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
source "$root/bench/ab-lib.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
before="${1:?usage: bench/serve-stack.sh BEFORE_CLI_JAR}"
threads="${THREADS:-2}" seconds="${SECONDS_PER_RUN:-10}" rounds="${ROUNDS:-2}" port="${PORT:-18090}"
glue="${GLUE:-$root/../shared/glue}"
work="$root/bench/results/serve-stack"
mkdir -p "$work"
mvn -q -B -f "$root/pom.xml" -pl cli -am -DskipTests package >&2
after="$root/cli/target/topa-cli.jar"
java=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx4g)
model="${MODEL:-$root/out/mrpc}"
[ -f "$model/task.json" ] || { model="$work/pruned"; [ -f "$model/task.json" ] || "${java[@]}" -jar "$after" prune-adapt --task mrpc \
    --data-dir "$glue" --sparsity 0.5 --train-limit 64 --epochs 1 --score-examples 64 --overwrite --out "$model" >&2; }
inputs="$work/mrpc-dev-pairs.txt"
awk -F'\t' 'NR > 1 && $4 != "" && $5 != "" { print $4 "\t" $5 }' "$glue/MRPC/dev.tsv" > "$inputs"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
echo "model: $model"
trap stop EXIT
export OMP_WAIT_POLICY=PASSIVE
: > "$work/lines"
side() { # name jar
    "${java[@]}" -jar "$2" serve --model "$model" --port "$port" --threads "$threads" > "$work/$1.log" 2>&1 &
    server=$!
    wait_up "$work/$1.log"
    for clients in 1 8 32; do
        "${java[@]}" -jar "$after" loadtest --url "http://127.0.0.1:$port/v1/predict" --inputs "$inputs" --seconds "$seconds" \
            --warmup-seconds 3 --clients "$clients" --name s | sed "s/^/$1 /" >> "$work/lines"
    done
    stop
}
for ((r = 0; r < rounds; r++)); do
    if ((r % 2 == 0)); then side before "$before"; side after "$after"; else side after "$after"; side before "$before"; fi
done
ab_summary "$work/lines" '(_ms|_rps)$' | grep -v "^after_over_before_s_c8_p99_ms"
ab_ratio "$work/lines" s_c8_p99_ms after_over_before_s_c8_p99_ms
