#!/usr/bin/env bash
# The OpenCL backend on the first OpenCL device (PoCL on the CPU here: a correctness platform, not a
# speed one -- reported, not tuned): every op's timing (`topa bench ops`) on the CPU backend and on
# OpenCL at the same shapes, one after the other, then what one kernel launch costs the host through
# topa's FFM binding and through JOCL (the reason docs/ARCHITECTURE.md gives for FFM). Prints `name:
# value` lines: cpu_<op>_ms and opencl_<op>_ms per op and shape, the launch figures, and last the
# geometric mean over the ops of OpenCL's time over the CPU's.
# Usage: bench/opencl.sh   (env: THREADS=2, M=1024 tokens, ITERATIONS=3, LAUNCHES=20000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), threads: ${THREADS:-2}, m: ${M:-1024}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for device in cpu opencl; do
    "$root/topa" bench ops --device "$device" --threads "${THREADS:-2}" --m "${M:-1024}" --iterations "${ITERATIONS:-3}" > "$out/$device"
    grep -E '^(backend|threads):' "$out/$device" | sed "s/^/$device /"
    grep -E '_ms: ' "$out/$device" | sed "s/^/${device}_/"
done
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$root/bench/target/benchmarks.jar" dev.topa.bench.OpenClLaunchBench \
    "${LAUNCHES:-20000}" 7 | grep -E '^(device|[a-z_]+_us|jocl_over_ffm_launch):'
awk -F': ' 'FNR == 1 { f++ } /_ms: / { if (f == 1) c[$1] = $2; else o[$1] = $2 }
    END { for (k in o) if (k in c && c[k] > 0 && o[k] > 0) { s += log(o[k] / c[k]); n++ }
          printf "opencl_over_cpu_time_geomean: %.2f\n", exp(s / n) }' "$out/cpu" "$out/opencl"
