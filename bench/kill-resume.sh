#!/usr/bin/env bash
# Kill -9 at random moments: a short `topa finetune` (RTE, LoRA, TRAIN_LIMIT examples, EPOCHS
# epochs) is run once uninterrupted, then again in another folder and killed KILLS times at random
# moments (saves included), each time restarted with --resume when a checkpoint is there (else
# afresh with --overwrite). After every kill the folder must hold no model yet, or one complete
# model (its manifest's sizes and checksums match: `topa predict` loads it); at the end the resumed
# run must reach the uninterrupted run's dev metric and its saved model the same eval score.
# Prints `name: value` lines; the asked figure last: kill_resume_final_metric_matches (1 or 0).
# Usage: bench/kill-resume.sh   (env: KILLS=20, TRAIN_LIMIT=256, EPOCHS=3, THREADS=2, SEED=7)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
kills="${KILLS:-20}" limit="${TRAIN_LIMIT:-256}" epochs="${EPOCHS:-3}" threads="${THREADS:-2}"
RANDOM="${SEED:-7}"
glue="${GLUE:-$root/../shared/glue}"
work="$root/bench/results/kill-resume"
rm -rf "$work" && mkdir -p "$work"
mvn -q -B -f "$root/pom.xml" -pl cli -am -DskipTests package >&2
topa=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -jar "$root/cli/target/topa-cli.jar")
args=(finetune --task rte --data-dir "$glue" --method lora --epochs "$epochs" --train-limit "$limit" --batch-size 16 --max-seq-len 64
    --threads "$threads")
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
t0=$(date +%s.%N)
"${topa[@]}" "${args[@]}" --out "$work/ref" > "$work/ref.log" 2>&1
ref_seconds=$(echo "$(date +%s.%N) - $t0" | bc)
dev_metric() { cat "$@" | grep -E "^epoch $epochs: " | tail -1 | sed 's/.*dev //; s/, [0-9.]* s$//'; }
ref_metric=$(dev_metric "$work/ref.log")
ref_eval=$("${topa[@]}" eval --model "$work/ref" --data-dir "$glue" | grep -v "^task:")
echo "uninterrupted_seconds: $ref_seconds"
echo "uninterrupted_last_epoch_dev: $ref_metric"
# the epochs a checkpoint holds (its safetensors metadata)
epochs_done() { python3 -c 'import json, struct, sys; f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(f.read(n))["__metadata__"]["epoch"])' "$1"; }
tmps() { ls -d "$work"/.topa-tmp-run-* 2>/dev/null | sort || true; }
# how the next start takes --out: continue an unfinished run, replace a finished one (its model kept until then), or start afresh
next_args() {
    extra=()
    if [ -f "$run/checkpoint.safetensors" ] && [ "$(epochs_done "$run/checkpoint.safetensors")" -lt "$epochs" ]; then extra=(--resume)
    elif [ -d "$run" ] && [ -n "$(ls -A "$run")" ]; then extra=(--overwrite); fi
}
run="$work/run"
complete=0 empty=0 during_save=0 mixed=0 resumed=0 done_before=0
for ((k = 1; k <= kills; k++)); do
    next_args
    [ "${extra[*]:-}" = "--resume" ] && resumed=$((resumed + 1))
    leftovers="$(tmps)" # a killed save's temp folder stays until the next run opens --out: not a save of this run
    "${topa[@]}" "${args[@]}" --out "$run" "${extra[@]}" >> "$work/run.log" 2>&1 &
    pid=$!
    if ((k % 2 == 0)); then
        # every second kill falls inside a save: when its temp folder appears, then 0-400 ms on
        for ((i = 0; i < 12000; i++)); do
            [ "$(tmps)" != "$leftovers" ] && [ -n "$(tmps)" ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.005
        done
        ms=$((RANDOM % 400))
        when="a save's start + ${ms} ms"
        sleep "$(echo "scale=3; $ms / 1000" | bc)"
    else
        # the others anywhere in what is left of the run: uniform over its expected length (a resumed run skips its done epochs)
        left=$epochs
        [ "${extra[*]:-}" = "--resume" ] && left=$((epochs - $(epochs_done "$run/checkpoint.safetensors")))
        delay=$(echo "scale=3; $((RANDOM % 1000)) * $ref_seconds * $left / $epochs / 1000" | bc)
        when="${delay}s"
        sleep "$delay"
    fi
    saving=0
    [ -n "$(comm -13 <(echo "$leftovers") <(tmps))" ] && saving=1
    finished=0
    if kill -9 "$pid" 2>/dev/null; then during_save=$((during_save + saving)); else finished=1 done_before=$((done_before + 1)); fi
    wait "$pid" 2>/dev/null || true
    # what a user finds in --out now (a half-done save's leftovers sit beside it until the next open)
    if [ -f "$run/manifest.json" ] || [ -f "$run/model.safetensors" ]; then
        if "${topa[@]}" predict --model "$run" "A man is playing." "Someone plays." > "$work/check.log" 2>&1; then complete=$((complete + 1))
        else mixed=$((mixed + 1)); echo "kill $k: the folder does not load:" >&2; cat "$work/check.log" >&2; fi
    else
        empty=$((empty + 1))
    fi
    echo "kill $k at $when (${extra[*]:-fresh}; saving: $saving; finished first: $finished): $(ls "$run" 2>/dev/null | tr '\n' ' ')" \
        >> "$work/kills.txt"
done
next_args
[ "${extra[*]:-}" = "--resume" ] || cp /dev/null "$work/run.log" # a fresh final run: only its own epochs count
"${topa[@]}" "${args[@]}" --out "$run" "${extra[@]}" > "$work/final.log" 2>&1
final_metric=$(dev_metric "$work/run.log" "$work/final.log") # the last epoch may have finished before a kill
final_eval=$("${topa[@]}" eval --model "$run" --data-dir "$glue" | grep -v "^task:")
echo "kills: $kills"
echo "kills_during_a_save: $during_save"
echo "runs_finished_before_their_kill: $done_before"
echo "after_kill_no_model_yet: $empty"
echo "after_kill_complete_model: $complete"
echo "after_kill_mixed_or_unloadable: $mixed"
echo "restarts_with_resume: $resumed"
echo "resumed_last_epoch_dev: $final_metric"
echo "uninterrupted_eval: $(echo $ref_eval)"
echo "resumed_eval: $(echo $final_eval)"
[ "$final_metric" = "$ref_metric" ] && [ "$final_eval" = "$ref_eval" ] && [ "$mixed" -eq 0 ] && ok=1 || ok=0
echo "kill_resume_final_metric_matches: $ok"
