#!/usr/bin/env bash
# The job behind bench/RESULTS.md's full-data GLUE table: bench/prune-glue.sh in passes over one record, this folder
# (RECORD: results.tsv, a row per finished run, never run again; each finished run's report, log, settings and seconds; topa.commit pins the jar),
# with the models and checkpoints in KEEP (a machine's scratch). Each pass skips what the record has, so the job goes on
# from any machine with this checkout: run it, commit this folder as rows land, run it again. The passes, most telling
# first; the last is the script's own defaults over everything, whose name: value lines are the figures.
#   W  distillation from the scoring warm-up's model (TEACHER=warmup), first seed, on MRPC, STS-B, CoLA (RTE's is
#      recorded): beside the fine-tuned teacher's rows (three seeds after D) it decides distillation's default
#   L  the dense learning-rate check (0.5x, 2x) on CoLA, MRPC and RTE
#   D  seeds 2-3 of RTE, MRPC, STS-B: full fine-tuning, then the Pruning-Adapter with its teacher and without (the
#      must-show figures' spread and distillation's default first)
#   G  the gradual schedule with the fine-tuned teacher (pa-gradual) on CoLA, RTE, MRPC, STS-B, every seed: on CoLA and
#      RTE's seed 2 it measured well above the one-shot schedule (probes), so it might have become the default (its rule,
#      in RESULTS, was not met at 50% once MRPC's three seeds landed: since then G's last rows, STS-B's, run after E, and
#      G2, SST-2's, last);
#      since 2822c2f its epochs after the ramp train the compacted model (about half a masked epoch's time at 50%), and
#      since a897e7a the ramp's epochs too, each at the size of the masks so far
#   C  LoRA and the paper's recipe, first seed (the paper's is 30 fp32 epochs: the longest runs but SST-2's)
#   S  the dense epochs check where a seed's full fine-tuning was best at its last epoch (SST-2's seed 1: 6 epochs of
#      about 45 minutes on 2 cores, so two sessions on one machine; RTE's seeds 2 and 3: its seed 2 with 10 epochs);
#      before D2 because a check that beats the default becomes the reference every gap is taken to, where D2 only
#      adds seeds to two methods' means
#   D2 seeds 2-3 of LoRA and the paper's recipe
#   E  the script as it is, every task, method and seed
#   H  layer-wise distillation where the record lacks it (RTE 50/70, MRPC 70, STS-B 70; not in the script's defaults,
#      so after E: an option's measurement, not a must-show figure)
# Usage: bench/prune-glue-full/run.sh [PASS...]   (default: all, in the order W L D C S D2 E G H G2); then table.sh puts the table in RESULTS
#   env: KEEP (/work/runs/glue-full), RECORD (this folder; another checkout's, to run from a clone while this one changes)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/../prune-glue.sh"
export KEEP="${KEEP:-/work/runs/glue-full}" RECORD="${RECORD:-$here}" TRAIN_LIMIT=all SST2_EPOCHS=3
pass() { # pass NAME VAR=VALUE...: the script with those settings
    local name=$1
    shift
    echo "== pass $name $(date -u +%FT%TZ): $*"
    env "$@" "$script"
}
only=(LR_FACTORS= EPOCHS_FACTOR=) # a pass runs its own rows, not the checks
for p in ${@:-W L D C S D2 E G H G2}; do
    case $p in
        W) pass W TEACHER=warmup TASKS="mrpc stsb cola" METHODS=pa-distill SEEDS=1 "${only[@]}" ;;
        L) pass L TASKS=rte METHODS=full SEEDS=1 LR_TASKS="cola mrpc rte" EPOCHS_FACTOR= ;;
        C) pass C TASKS="mrpc stsb cola sst2" METHODS="lora paper" SEEDS=1 "${only[@]}" ;;
        S) pass S TASKS="sst2 stsb rte" METHODS=full SEEDS=1 LR_FACTORS= ;;
        D) pass D TASKS="rte mrpc stsb" METHODS="full pa-distill pa" SEEDS="1 2 3" "${only[@]}" ;;
        G) pass G TASKS="cola rte mrpc stsb" METHODS=pa-gradual SEEDS="1 2 3" "${only[@]}" ;;
        G2) pass G2 TASKS=sst2 METHODS=pa-gradual SEEDS=1 "${only[@]}" ;;
        D2) pass D2 TASKS="rte mrpc stsb" METHODS="lora paper" SEEDS="1 2 3" "${only[@]}" ;;
        H) pass H TASKS="rte mrpc stsb" METHODS=pa-hidden SEEDS=1 "${only[@]}" ;;
        E) pass E ;;
        *) echo "run.sh: unknown pass $p (W L D C S D2 E G H G2)" >&2; exit 2 ;;
    esac
done
