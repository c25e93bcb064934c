#!/usr/bin/env bash
# The Pruning-Adapter's accuracy on GLUE: on CoLA, SST-2, MRPC, STS-B and RTE, with each task's
# default recipe, the methods
#   full       dense full fine-tuning (`topa finetune --method full`)
#   lora       dense LoRA (`topa finetune`)
#   paper      the paper's recipe (`topa prune-adapt --recipe paper`)
#   pa         topa's Pruning-Adapter at each SPARSITY (`topa prune-adapt --sparsity S`)
#   pa-distill the same, the same seed's dense full fine-tuning teaching (`--distill $DISTILL --teacher DIR`; the
#              full run goes first); TEACHER=warmup: the scoring warm-up's model teaches instead (rows named warmdistill)
#   pa-hidden  pa-distill with layer-wise distillation too (`--distill-hidden $HIDDEN`: every layer's output matched to the
#              fine-tuned teacher's, which stays beside the student; not in the default METHODS: it costs time and memory)
# on the first TRAIN_LIMIT training examples ("all": the whole training set) and the whole dev set;
# RTE, MRPC and STS-B with every seed of SEEDS (mean and spread), the others with the first. Every
# run is its own process, one after the other, from one private copy of the jar; each finished run
# appends a row to results.tsv in the work folder (KEEP: kept and resumed -- a run whose
# report.json is there is not run again, one killed after an epoch continues from its checkpoint;
# its seconds are then those of the attempt that finished; a run's settings are kept beside it, NAME.args, and a folder
# made with other settings -- another TRAIN_LIMIT, other options -- is refused with exit 2, not mixed in; folders from
# before that record are taken as they are). Then the dense learning-rate check (full fine-tuning at
# LR_FACTORS x the default on LR_TASKS: the baseline is not weak by accident) and, for a task whose
# dense run was best at its last epoch, one with EPOCHS_FACTOR x the epochs (not cut short), the plot
# prune-glue.png (best dev metric vs parameters removed, a panel per task, dense full fine-tuning a level line), the
# same figures as a Markdown table (prune-glue.md, with published dense scores for scale), and
# `name: value` lines: per task and method the mean best dev main metric (x 100, GLUE points) with
# its spread, the gaps to the task's strongest dense run (dense full fine-tuning, or a check that beat it), each kind
# of distillation's effect per task and on average, each pruned method's largest peak ratio to dense full fine-tuning,
# every dense run best at its last epoch, then the averages over the tasks, avg_metric_gap_points_50 last (positive:
# the pruned model is behind).
# Usage: bench/prune-glue.sh [extra options for every command]
#   env: DATA (../shared/glue beside the checkout), THREADS (2), TRAIN_LIMIT (all), TASKS ("cola sst2 mrpc stsb rte"),
#        SPARSITY ("0.5 0.7"), METHODS ("full lora paper pa pa-distill"), SEEDS ("1 2 3"), DISTILL (0.5),
#        LR_TASKS ("mrpc rte"), LR_FACTORS ("0.5 2"; empty: no check), SST2_EPOCHS (the SST-2 epochs; empty: its default),
#        TEACHER (full or warmup), HIDDEN (1: pa-hidden's weight), EPOCHS_FACTOR (2; empty: no epochs check), KEEP
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
data="${DATA:-$root/../shared/glue}"
threads="${THREADS:-2}" limit="${TRAIN_LIMIT:-all}" sparsities="${SPARSITY:-0.5 0.7}" distill="${DISTILL:-0.5}"
tasks="${TASKS:-cola sst2 mrpc stsb rte}" methods="${METHODS:-full lora paper pa pa-distill}" seeds="${SEEDS:-1 2 3}"
lr_tasks="${LR_TASKS-mrpc rte}" lr_factors="${LR_FACTORS-0.5 2}" teacher="${TEACHER:-full}" epochs_factor="${EPOCHS_FACTOR-2}" hidden="${HIDDEN:-1}"
case $teacher in full | warmup) ;; *) echo "prune-glue: TEACHER is full or warmup, got '$teacher'" >&2; exit 2 ;; esac
case " $methods " in *" pa-hidden "*) [ "$teacher" = full ] || { echo "prune-glue: pa-hidden needs TEACHER=full (the warm-up model becomes the student)" >&2; exit 2; } ;; esac
[ "$limit" != all ] || limit=100000000
mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
work="${KEEP:-$(mktemp -d)}"
mkdir -p "$work"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
[ -f "$work/topa.jar" ] || cp "$root/cli/target/topa-cli.jar" "$work/topa.jar"
[ -f "$work/benchmarks.jar" ] || cp "$root/bench/target/benchmarks.jar" "$work/benchmarks.jar"
topa=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -jar "$work/topa.jar")
results="$work/results.tsv"
[ -f "$results" ] || printf 'task\tmethod\tsparsity\tseed\tbest\tremoved_pct\tpeak_mib\tseconds\tbest_at_last\n' > "$results"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), threads: $threads, train limit: $limit"

# run NAME SPARSITY SEED COMMAND...: runs once into $work/NAME (reused when its report.json is there), appends its row
run() {
    local name=$1 sp=$2 seed=$3
    shift 3
    local out="$work/$name" t0
    # what the run is asked: a folder of KEEP made with other settings (another TRAIN_LIMIT, epochs, options) is refused,
    # not mixed into the table (folders from before this record was kept are taken as they are)
    local asked="$* --train-limit $limit --seed $seed ${extra[*]}"
    asked="${asked//"$work"/KEEP}" # the teacher's folder is in KEEP: the same run however KEEP's path is spelled
    if [ -f "$out.args" ] && [ "$(cat "$out.args")" != "$asked" ]; then
        echo "prune-glue: $out was run as '$(cat "$out.args")', this run asks '$asked': use another KEEP, or remove $out," \
            "$out.*, its line in $work/rows.done and its row in $work/results.tsv" >&2
        exit 2
    fi
    if [ ! -f "$out/report.json" ]; then
        t0=$(date +%s)
        # a run killed after an epoch continues from its checkpoint (its log goes on); one killed before starts afresh, as does
        # one whose checkpoint has no evaluation history (an older topa's: its report would lack the epochs before the kill)
        local mode=(--overwrite)
        if [ -f "$out/checkpoint.safetensors" ] && grep -qa '"history"' "$out/checkpoint.safetensors"; then mode=(--resume); echo "== resumed $(date -u +%FT%TZ)" >> "$out.log"; else : > "$out.log"; fi
        [ "${mode[0]}" = --resume ] || { printf '%s\n' "$asked" > "$out.args.tmp" && mv "$out.args.tmp" "$out.args"; } # a fresh start records what it runs
        "${topa[@]}" "$@" --data-dir "$data" --threads "$threads" --train-limit "$limit" --seed "$seed" "${mode[@]}" --out "$out" "${extra[@]}" \
            >> "$out.log" 2>&1 || { tail -20 "$out.log" >&2; exit 1; }
        echo "$(($(date +%s) - t0))" > "$out.seconds"
    fi
    grep -q "^$name	" "$work/rows.done" 2>/dev/null && return 0
    local task=${name%%-*} method=${name#*-}
    method=${method%-s*}
    python3 - "$out/report.json" "$out.log" "$task" "$method" "$sp" "$seed" "$(cat "$out.seconds" 2>/dev/null || echo 0)" >> "$results" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1])); log = open(sys.argv[2]).read()
removed = re.search(r"\(([0-9.]+)% removed\)", log); peak = re.findall(r"total\s+\S+ \S+\s+([0-9.]+) (MiB|GiB)", log)
mib = (float(peak[-1][0]) * (1024 if peak[-1][1] == "GiB" else 1)) if peak else 0
print("\t".join([sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], "%.4f" % r["best"][r["main_metric"]],
                 removed.group(1) if removed else "0", "%.1f" % mib, sys.argv[7], str(r["best"]["step"] == r["epochs"][-1]["step"]).lower()]))
PY
    printf '%s\t\n' "$name" >> "$work/rows.done"
}
extra=("$@")
for t in $tasks; do
    task_seeds="${seeds%% *}"
    case $t in rte | mrpc | stsb) task_seeds="$seeds" ;; esac
    epochs=()
    [ "$t" != sst2 ] || [ -z "${SST2_EPOCHS:-}" ] || epochs=(--epochs "$SST2_EPOCHS")
    for seed in $task_seeds; do
        for m in $methods; do
            case $m in
                full) run "$t-full-s$seed" 0 "$seed" finetune --task "$t" --method full "${epochs[@]}" ;;
                lora) run "$t-lora-s$seed" 0 "$seed" finetune --task "$t" "${epochs[@]}" ;;
                paper) run "$t-paper-s$seed" 0.30 "$seed" prune-adapt --task "$t" --recipe paper --inference-iterations 0 "${epochs[@]}" ;;
                pa | pa-distill | pa-hidden)
                    d=() name=$m
                    if [ "$m" = pa-distill ] && [ "$teacher" = warmup ]; then
                        d=(--distill "$distill") name=warmdistill
                    elif [ "$m" != pa ]; then
                        run "$t-full-s$seed" 0 "$seed" finetune --task "$t" --method full "${epochs[@]}"
                        d=(--distill "$distill" --teacher "$work/$t-full-s$seed")
                        [ "$m" = pa-distill ] || d+=(--distill-hidden "$hidden")
                    fi
                    for sp in $sparsities; do
                        run "$t-$name$(awk -v s="$sp" 'BEGIN { printf "%d", 100 * s + 0.5 }')-s$seed" "$sp" "$seed" prune-adapt --task "$t" --sparsity "$sp" \
                            --inference-iterations 0 "${d[@]}" "${epochs[@]}"
                    done ;;
                *) echo "prune-glue: unknown method $m" >&2; exit 2 ;;
            esac
        done
    done
done
# the dense baseline's learning rate: full fine-tuning at other rates on a few tasks, first seed
for t in $lr_tasks; do
    for f in $lr_factors; do
        lr="$(python3 -c "import json,sys; print(float(json.load(open(sys.argv[1]))['recipe']['lr']) * float(sys.argv[2]))" \
            "$work/$t-full-s${seeds%% *}/report.json" "$f")"
        run "$t-fulllr$f-s${seeds%% *}" 0 "${seeds%% *}" finetune --task "$t" --method full --lr "$lr"
    done
done
# the dense baseline's epochs: where full fine-tuning's best evaluation was its last, once more with EPOCHS_FACTOR x its epochs
for t in $tasks; do
    [ -n "$epochs_factor" ] && [ -f "$work/$t-full-s${seeds%% *}/report.json" ] || continue
    more="$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))
print(round(r['recipe']['epochs'] * float(sys.argv[2])) if r['best']['step'] == r['epochs'][-1]['step'] else '')" \
        "$work/$t-full-s${seeds%% *}/report.json" "$epochs_factor")"
    [ -z "$more" ] || run "$t-fullep$more-s${seeds%% *}" 0 "${seeds%% *}" finetune --task "$t" --method full --epochs "$more"
done
"$JAVA_HOME/bin/java" -cp "$work/benchmarks.jar" dev.topa.bench.GlueTable "$results" "$work/prune-glue.png" "$sparsities"
