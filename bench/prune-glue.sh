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
#              fine-tuned teacher's, which stays beside the student; not in the default METHODS: it costs time, a teacher forward per batch)
#   pa-gradual pa-distill on the gradual schedule (`--schedule gradual`: masks tighten while the adapters train, on the
#              cubic ramp; not in the default METHODS: better at 70%, mixed at 50% on full data, bench/RESULTS.md)
# on the first TRAIN_LIMIT training examples ("all": the whole training set) and the whole dev set;
# RTE, MRPC and STS-B with every seed of SEEDS (mean and spread), the others with the first. Every
# run is its own process, one after the other, from one private copy of the jar; each finished run
# appends a row to results.tsv in the work folder (KEEP: kept and resumed -- a run whose
# report.json is there is not run again, one killed after an epoch continues from its checkpoint;
# its seconds are then those of the attempt that finished; a run's settings are kept beside it, NAME.args, and a folder
# made with other settings -- another TRAIN_LIMIT, other options -- is refused with exit 2, not mixed in; folders from
# before that record are taken as they are). RECORD (a folder; KEEP when unset) keeps what outlives the machine:
# results.tsv, each finished run's report, log, settings and seconds, and topa.commit, the commit its
# topa.jar is built from. A job spread over machines points RECORD into the repository and commits it: a run with a
# row in results.tsv is never run again, its folder in KEEP or not; a recorded dense run whose model is needed as a teacher and
# is not in KEEP is trained again (its row stays as recorded), and a KEEP without topa.jar gets the pinned commit's
# (built in a temporary worktree where the engine's sources differ from the checkout's). Then the dense learning-rate check (full fine-tuning at
# LR_FACTORS x the default on LR_TASKS: the baseline is not weak by accident) and, for a task whose
# dense run was best at its last epoch (any seed), one with EPOCHS_FACTOR x the epochs (not cut short), the plot
# prune-glue.png (best dev metric vs parameters removed, a panel per task, dense full fine-tuning a level line), the
# same figures as a Markdown table (prune-glue.md, with published dense scores for scale), and
# `name: value` lines (printed, and kept as prune-glue.lines): per task and method the mean best dev main metric (x 100, GLUE points) with
# its spread, the gaps to the task's strongest dense run (dense full fine-tuning, or a check that beat it), each kind
# of distillation's effect per task and on average (on the seeds both methods ran), each pruned method's largest peak
# ratio to dense full fine-tuning, every dense run best at its last epoch, then the averages over the tasks,
# avg_metric_gap_points_50 last (positive: the pruned model is behind; the tasks it averages on the line before).
# Usage: bench/prune-glue.sh [extra options for every command]
#   env: DATA (../shared/glue beside the checkout), THREADS (2), TRAIN_LIMIT (all), TASKS ("cola sst2 mrpc stsb rte"),
#        SPARSITY ("0.5 0.7"), METHODS ("full lora paper pa pa-distill"), SEEDS ("1 2 3"), DISTILL (0.5),
#        LR_TASKS ("mrpc rte"), LR_FACTORS ("0.5 2"; empty: no check), SST2_EPOCHS (the SST-2 epochs; empty: its default),
#        TEACHER (full or warmup), HIDDEN (1: pa-hidden's weight), EPOCHS_FACTOR (2; empty: no epochs check), KEEP, RECORD
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
record="${RECORD:-$work}"
mkdir -p "$record"
# the engine every row runs: one jar for the whole job, pinned by commit (topa.commit in RECORD, topa.jar.commit beside
# the jar in KEEP) so that another machine runs the same; a KEEP whose jar is another commit's is refused
head="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo none)"
engine=(. ':(exclude)bench' ':(exclude)docs' ':(exclude)kit' ':(exclude)*.md') # what topa-cli.jar is not built from
built="$head" # what the checkout's jar is: HEAD's, unless its engine sources have uncommitted or untracked changes
[ "$head" = none ] || [ -z "$(git -C "$root" status --porcelain --untracked-files=all -- "${engine[@]}")" ] || built="$head-dirty"
[ -f "$record/topa.commit" ] || [ ! -f "$work/topa.jar.commit" ] || cp "$work/topa.jar.commit" "$record/topa.commit"
[ -f "$record/topa.commit" ] || { printf '%s\n' "$built" > "$record/topa.commit.tmp" && mv "$record/topa.commit.tmp" "$record/topa.commit"; }
pin="$(cat "$record/topa.commit")"
if [ -f "$work/topa.jar" ]; then
    [ ! -f "$work/topa.jar.commit" ] || [ "$(cat "$work/topa.jar.commit")" = "$pin" ] || {
        echo "prune-glue: $work/topa.jar is $(cat "$work/topa.jar.commit")'s, the rows in $record run on $pin: use another KEEP" >&2
        exit 2
    }
elif [ "$pin" = "$built" ] || { [ "$built" = "${built%-dirty}" ] && git -C "$root" diff --quiet "$pin" HEAD -- "${engine[@]}" 2>/dev/null; }; then
    cp "$root/cli/target/topa-cli.jar" "$work/topa.jar.tmp" # the checkout builds the same jar
elif [ "$pin" = "${pin%-dirty}" ] && [ "$head" != none ]; then
    echo "prune-glue: the rows in $record run on $pin; building its topa.jar in a temporary worktree" >&2
    src="$(mktemp -d)"
    trap 'git -C "$root" worktree remove --force "$src/topa" 2>/dev/null; rm -rf "$src"; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
    git -C "$root" worktree add -q --detach "$src/topa" "$pin"
    mvn -q -B -f "$src/topa/pom.xml" -DskipTests -pl cli -am package >&2
    cp "$src/topa/cli/target/topa-cli.jar" "$work/topa.jar.tmp"
else
    echo "prune-glue: the rows in $record run on $pin, which this checkout cannot build (uncommitted, or no git): use another RECORD" >&2
    exit 2
fi
if [ -f "$work/topa.jar.tmp" ]; then
    printf '%s\n' "$pin" > "$work/topa.jar.commit"
    mv "$work/topa.jar.tmp" "$work/topa.jar"
fi
topa=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Xmx12g -jar "$work/topa.jar")
results="$record/results.tsv"
[ -f "$results" ] || printf 'task\tmethod\tsparsity\tseed\tbest\tremoved_pct\tpeak_mib\tseconds\tbest_at_last\tepochs\tlr\n' > "$results"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), threads: $threads, train limit: $limit"

# run [--model] NAME SPARSITY SEED COMMAND...: runs once into $work/NAME (reused when its report.json is there), appends its
# row; a row already recorded is not run again, unless --model asks for its model (a teacher) and KEEP does not have it
run() {
    local need_model=0
    [ "$1" != --model ] || { need_model=1; shift; }
    local name=$1 sp=$2 seed=$3
    shift 3
    local out="$work/$name" t0
    # what the run is asked: a run recorded or kept with other settings (another TRAIN_LIMIT, epochs, options) is refused,
    # not mixed into the table (runs from before this record was kept are taken as they are)
    local asked="$* --train-limit $limit --seed $seed ${extra[*]}" was
    asked="${asked//"$work"/KEEP}" # the teacher's folder is in KEEP: the same run however KEEP's path is spelled
    for was in "$record/$name.args" "$out.args"; do
        [ ! -f "$was" ] || [ "$(cat "$was")" = "$asked" ] || {
            echo "prune-glue: $name was run as '$(cat "$was")' ($was), this run asks '$asked': use another KEEP and RECORD, or remove" \
                "$out, $out.*, $record/$name.* and its row in $results" >&2
            exit 2
        }
    done
    if recorded "$name"; then
        [ "$need_model" = 1 ] && [ ! -f "$out/report.json" ] || return 0
        echo "prune-glue: $name is recorded in $record but its model is not in $work: training it again as a teacher (the row stays as recorded)" >&2
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
    recorded "$name" && return 0
    local task=${name%%-*} method=${name#*-}
    method=${method%-s*}
    if [ "$record" != "$work" ]; then # the run's evidence beside its row, each file whole or not at all
        local f
        for f in log args seconds report.json; do
            local from="$out.$f"
            [ "$f" != report.json ] || from="$out/$f"
            [ ! -f "$from" ] || { cp "$from" "$record/$name.$f.tmp" && mv "$record/$name.$f.tmp" "$record/$name.$f"; }
        done
    fi
    python3 - "$out/report.json" "$out.log" "$task" "$method" "$sp" "$seed" "$(cat "$out.seconds" 2>/dev/null || echo 0)" >> "$results" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1])); log = open(sys.argv[2]).read()
removed = re.search(r"\(([0-9.]+)% removed\)", log); peak = re.findall(r"total\s+\S+ \S+\s+([0-9.]+) (MiB|GiB)", log)
# the gradual schedule says only "encoder parameters DENSE -> PRUNED" (no share): the share from those
counts = re.findall(r"encoder parameters:? ([0-9,]+) -> ([0-9,]+)", log)
share = removed.group(1) if removed else "%.1f" % (100 * (1 - int(counts[-1][1].replace(",", "")) / int(counts[-1][0].replace(",", "")))) if counts else "0"
mib = (float(peak[-1][0]) * (1024 if peak[-1][1] == "GiB" else 1)) if peak else 0
recipe = r.get("recipe", {})
print("\t".join([sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], "%.4f" % r["best"][r["main_metric"]],
                 share, "%.1f" % mib, sys.argv[7], str(r["best"]["step"] == r["epochs"][-1]["step"]).lower(),
                 str(recipe.get("epochs", "NA")), str(recipe.get("lr", "NA"))]))
PY
}
extra=("$@")
# recorded NAME (task-method-sSEED): its row is in results.tsv, so it never runs again
recorded() { awk -F'\t' -v n="$1" 'FNR > 1 && $1 "-" $2 "-s" $4 == n { found = 1 } END { exit !found }' "$results"; }
percent() { awk -v s="$1" 'BEGIN { printf "%d", 100 * s + 0.5 }'; }
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
                pa | pa-distill | pa-hidden | pa-gradual)
                    d=() name=$m
                    if [ "$m" = pa-distill ] && [ "$teacher" = warmup ]; then
                        d=(--distill "$distill") name=warmdistill
                    elif [ "$m" != pa ]; then
                        d=(--distill "$distill" --teacher "$work/$t-full-s$seed")
                        [ "$m" != pa-hidden ] || d+=(--distill-hidden "$hidden")
                        [ "$m" != pa-gradual ] || d+=(--schedule gradual)
                        for sp in $sparsities; do # the teacher's model only where a row still has to run
                            ! recorded "$t-$name$(percent "$sp")-s$seed" && [ ! -f "$work/$t-$name$(percent "$sp")-s$seed/report.json" ] || continue
                            run --model "$t-full-s$seed" 0 "$seed" finetune --task "$t" --method full "${epochs[@]}"
                            break
                        done
                    fi
                    for sp in $sparsities; do
                        run "$t-$name$(percent "$sp")-s$seed" "$sp" "$seed" prune-adapt --task "$t" --sparsity "$sp" \
                            --inference-iterations 0 "${d[@]}" "${epochs[@]}"
                    done ;;
                *) echo "prune-glue: unknown method $m" >&2; exit 2 ;;
            esac
        done
    done
done
# full FIELD TASK [SEED]: a field of the task's dense full fine-tuning row, of SEED or the first seed (fields: 9 best at its
# last epoch, 10 epochs, 11 lr)
s1="${seeds%% *}"
full() { awk -F'\t' -v f="$1" -v t="$2" -v s="${3:-$s1}" '$1 == t && $2 == "full" && $4 == s { v = $f } END { print v }' "$results"; }
# the dense baseline's learning rate: full fine-tuning at other rates on a few tasks, first seed
for t in $lr_tasks; do
    [ -n "$lr_factors" ] || continue
    epochs=()
    [ "$t" != sst2 ] || [ -z "${SST2_EPOCHS:-}" ] || epochs=(--epochs "$SST2_EPOCHS")
    run "$t-full-s$s1" 0 "$s1" finetune --task "$t" --method full "${epochs[@]}"
    for f in $lr_factors; do
        lr="$(python3 -c "import sys; print(float(sys.argv[1]) * float(sys.argv[2]))" "$(full 11 "$t")" "$f")" \
            || { echo "prune-glue: $t-full-s$s1's row in $results has no learning rate" >&2; exit 1; }
        run "$t-fulllr$f-s$s1" 0 "$s1" finetune --task "$t" --method full --lr "$lr" "${epochs[@]}"
    done
done
# the dense baseline's epochs: where full fine-tuning's best evaluation was its last (with any seed: the lowest such
# seed), once more with that seed and EPOCHS_FACTOR x its epochs
for t in $tasks; do
    [ -n "$epochs_factor" ] || continue
    s="$(awk -F'\t' -v t="$t" '$1 == t && $2 == "full" && $9 == "true" { print $4 }' "$results" | sort -n | head -1)"
    [ -n "$s" ] || continue
    more="$(python3 -c "import sys; print(round(int(sys.argv[1]) * float(sys.argv[2])))" "$(full 10 "$t" "$s")" "$epochs_factor")" \
        || { echo "prune-glue: $t-full-s$s's row in $results has no epochs" >&2; exit 1; }
    run "$t-fullep$more-s$s" 0 "$s" finetune --task "$t" --method full --epochs "$more"
done
# the lines kept beside the table and the plot GlueTable writes, so that the three always tell the same record
"$JAVA_HOME/bin/java" -cp "$root/bench/target/benchmarks.jar" dev.topa.bench.GlueTable "$results" "$record/prune-glue.png" "$sparsities" \
    | tee "$record/prune-glue.lines.tmp"
mv "$record/prune-glue.lines.tmp" "$record/prune-glue.lines"
