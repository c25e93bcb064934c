#!/usr/bin/env bash
# One GLUE task's comparison, topa vs the same recipe replayed in PyTorch, full fine-tuning and
# LoRA: topa trains (`topa finetune`), exports the identical starting point, data, batch order and
# hyper-parameters (`--export-recipe`), and bench/reference/glue_finetune.py trains that in torch
# with the same dropout masks. Prints `name: value` lines, `metric_gap_points` last (the larger of
# the two methods' |topa - PyTorch| best dev metric, in GLUE points).
# Usage: bench/glue.sh TASK [finetune options, e.g. --epochs 3 --train-limit 2000]
#   env: DATA (default ../shared/glue beside the checkout), THREADS (2), METHODS ("full lora")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
task="${1:?usage: bench/glue.sh TASK [finetune options]}"
shift
data="${DATA:-$root/../shared/glue}"
threads="${THREADS:-2}"
methods="${METHODS:-full lora}"
/usr/bin/python3 -c "import torch, numpy" 2>/dev/null || {
    echo "glue.sh: installing python3-torch (Debian)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch >&2
}
[ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] || {
    echo "glue.sh: installing libopenblas0-openmp (Debian)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas0-openmp >&2
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/lines"
for m in $methods; do
    "$root/topa" finetune --task "$task" --method "$m" --data-dir "$data" --threads "$threads" --out "$work/ours-$m" "$@" \
        > "$work/ours-$m.log" 2>&1 || { cat "$work/ours-$m.log" >&2; exit 1; }
    grep -E "^epoch [0-9]+:" "$work/ours-$m.log" | sed "s/^/topa $m /" >&2
    /usr/bin/python3 - "$work/ours-$m/report.json" "$m" >> "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
main = r["main_metric"]
print(f"topa_{sys.argv[2]}_best_{main}: {r['best'][main]:.4f}")
print(f"topa_{sys.argv[2]}_seconds_per_epoch: {sum(e['seconds'] for e in r['epochs']) / len(r['epochs']):.1f}")
PY
    "$root/topa" finetune --task "$task" --method "$m" --data-dir "$data" --out "$work/unused" "$@" \
        --export-recipe "$work/recipe-$m" > /dev/null
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS="$threads" \
        OMP_NUM_THREADS="$threads" THREADS="$threads" /usr/bin/python3 "$root/bench/reference/glue_finetune.py" "$work/recipe-$m" \
        > "$work/torch-$m.log"
    grep -E "^epoch" "$work/torch-$m.log" | sed "s/^/pytorch $m /" >&2
    grep -E "^pytorch_best_" "$work/torch-$m.log" | sed "s/^pytorch_best_/pytorch_${m}_best_/" >> "$out"
done
cat "$out"
awk -F': ' -v methods="$methods" '{v[$1] = $2} END {
    gap = 0; n = split(methods, ms, " ");
    for (k in v) if (k ~ /^topa_.*_best_/) {
        t = k; sub(/^topa_/, "pytorch_", t);
        d = v[k] - v[t]; if (d < 0) d = -d;
        name = k; sub(/^topa_/, "", name); sub(/_best_.*/, "", name);
        printf "%s_gap_points: %.2f\n", name, 100 * d;
        if (d > gap) gap = d;
    }
    printf "metric_gap_points: %.2f\n", 100 * gap;
}' "$out"
