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
    --data-dir "$glue" --sparsity 0.5 --train-limit 64 --epochs 1 --score-examples 64 --out "$model" >&2; }
inputs="$work/mrpc-dev-pairs.txt"
awk -F'\t' 'NR > 1 && $4 != "" && $5 != "" { print $4 "\t" $5 }' "$glue/MRPC/dev.tsv" > "$inputs"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
echo "model: $model"
server=""
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; server=""; }
trap stop EXIT
wait_up() {
    for _ in $(seq 1 600); do
        kill -0 "$server" 2>/dev/null || { echo "server exited:" >&2; tail -5 "$1" >&2; exit 1; }
        grep -q "^serving" "$1" && curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server did not start" >&2; exit 1
}
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
awk '{ key = $2; sub(/:$/, "", key); v[$1 " " key] = v[$1 " " key] " " $3; keys[key] = 1 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        for (k in keys) {
            b = median(v["before " k]); a = median(v["after " k])
            printf "before_%s: %s\nafter_%s: %s\n", k, b, k, a
            if (k ~ /(_ms|_rps)$/ && b > 0) printf "after_over_before_%s: %.3f\n", k, a / b
        }
    }' "$work/lines" | sort | grep -v "after_over_before_s_c8_p99_ms"
awk '$2 == "s_c8_p99_ms:" { v[$1] = v[$1] " " $3 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END { printf "after_over_before_s_c8_p99_ms: %.3f\n", median(v["after"]) / median(v["before"]) }' "$work/lines"
