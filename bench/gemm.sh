#!/usr/bin/env bash
# fp32 GEMM: topa vs OpenBLAS (SkylakeX kernel forced) on 2 threads at the six BERT training shapes,
# one JMH run. Prints one `name: value` line per figure, `gemm_min_ratio_vs_openblas` last.
# Usage: bench/gemm.sh            (env: THREADS=2, JMH_ARGS to add JMH options)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
threads="${THREADS:-2}"

if ! ldconfig -p | grep -q 'libopenblas.so.0'; then
    echo "gemm.sh: installing Debian's libopenblas0-pthread (the baseline)" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2 && apt-get install -y -qq libopenblas0-pthread >&2
    else sudo apt-get update -qq >&2 && sudo apt-get install -y -qq libopenblas0-pthread >&2; fi
fi

mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
jar="$root/bench/target/benchmarks.jar"
out="$root/bench/results"
mkdir -p "$out"
# OpenBLAS 0.3.21 takes its SSE3 "Prescott" kernel on this Zen 4 unless told otherwise.
export OPENBLAS_CORETYPE=SkylakeX
java="$JAVA_HOME/bin/java --enable-native-access=ALL-UNNAMED"
$java -cp "$jar" dev.topa.bench.OpenBlasInfo
echo "threads: $threads"
$java -jar "$jar" GemmBenchmark -p threads="$threads" -f 1 -wi 3 -w 2s -i 5 -r 2s \
    -jvmArgsAppend "--enable-native-access=ALL-UNNAMED -Xmx8g" \
    -rf csv -rff "$out/gemm.csv" ${JMH_ARGS:-} > "$out/gemm.log" 2>&1 \
    || { tail -40 "$out/gemm.log" >&2; exit 1; }

# CSV: "Benchmark","Mode","Threads","Samples","Score","Score Error (99.9%)","Unit","Param: dims","Param: impl","Param: m","Param: threads"
awk -F, 'NR > 1 {
    gsub(/"/, "");
    kn = $8; impl = $9; m = $10; ms = $5;
    split(kn, d, "x"); k = d[1]; n = d[2];
    gf = 2.0 * m * k * n / (ms * 1e-3) / 1e9;
    score[impl, kn] = gf; order[kn] = ++seen;
    shapes[kn] = m "x" k "x" n;
} END {
    min = 1e9;
    for (kn in order) list[order[kn]] = kn;
    for (i = 1; i <= seen; i++) {
        kn = list[i]; if (kn == "" || done[kn]++) continue;
        r = score["topa", kn] / score["openblas", kn];
        printf "gemm_%s_topa_gflops: %.1f\n", shapes[kn], score["topa", kn];
        printf "gemm_%s_openblas_gflops: %.1f\n", shapes[kn], score["openblas", kn];
        printf "gemm_%s_ratio: %.3f\n", shapes[kn], r;
        if (r < min) min = r;
    }
    printf "gemm_min_ratio_vs_openblas: %.3f\n", min;
}' "$out/gemm.csv"
