#!/usr/bin/env bash
# Data-parallel training on this machine: LoRA and full fine-tuning of the default model (global
# batch 32 x 128) on 2 MPI ranks (mpirun, one kernel thread each: 2 cores), per step the time split
# into compute and the communication backward did not hide, the bytes each rank all-reduces, and the
# same sum alone; then the napkin math for 8 GPUs on NVLink and for 2 hosts on 100 Gb/s Ethernet
# (ring all-reduce: t = a + 2 (N - 1) / N * bytes / bandwidth). Prints `name: value` lines, the
# exposed share of communication in the LoRA step last.
# Usage: bench/dist.sh   (env: RANKS=2, STEPS=5, THREADS=1 per rank)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
command -v mpirun >/dev/null || { echo "bench/dist.sh: needs mpirun (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 2; }
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
ranks="${RANKS:-2}" steps="${STEPS:-5}" threads="${THREADS:-1}"
asroot=()
[ "$(id -u)" -ne 0 ] || asroot=(--allow-run-as-root)
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for m in lora full; do
    mpirun "${asroot[@]}" --oversubscribe -np "$ranks" "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx6g \
        -cp "$root/bench/target/benchmarks.jar" dev.topa.bench.DistBench "$m" "$steps" "$threads" 2>/dev/null | tee -a "$out"
done
awk -F': ' -v r="$ranks" '{ split($2, f, " "); v[$1] = f[1] } END {
    for (mi = 1; mi <= 2; mi++) {
        m = mi == 1 ? "lora" : "full"; p = "dist_" m "_" r "ranks_"; b = v[p "bytes_reduced_per_step"]
        # NVLink (H100 SXM, NCCL bus bandwidth ~370 GB/s for large messages, ~30 us for a small one across 8 GPUs)
        nv = 0.030 + 2 * 7 / 8 * b / 370e9 * 1e3
        # 100 Gb/s Ethernet between 2 hosts (~11 GB/s achieved, ~50 us per message)
        eth = 0.050 + 2 * 1 / 2 * b / 11e9 * 1e3
        printf "napkin_%s_8gpus_nvlink_allreduce_ms: %.3f (comm dominates a step that computes in less than this)\n", m, nv
        printf "napkin_%s_2hosts_100gbe_allreduce_ms: %.3f\n", m, eth
    }
    printf "dist_full_%dranks_communication_exposed_share: %.3f\n", r, v["dist_full_" r "ranks_communication_exposed_ms"] / v["dist_full_" r "ranks_step_ms"]
    printf "dist_lora_%dranks_communication_exposed_share: %.3f\n", r, v["dist_lora_" r "ranks_communication_exposed_ms"] / v["dist_lora_" r "ranks_step_ms"]
}' "$out"
