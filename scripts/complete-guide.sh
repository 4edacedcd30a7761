#!/usr/bin/env bash
# The whole guide, every chapter filled from real runs: after the main job (scripts/shakespeare.sh,
# run first if its run folder is not there), two more experiments on this machine, then the guide again.
#   chapter 3: an ablation — the guide's classic block (post-norm, ReLU) against ours, same time each (~4 min)
#   chapter 7: the main job's model fine-tuned on the built-in reading questions for 10 minutes, then
#              scored on questions from the three held-out plays, with the copying-heads figure (~14 min)
# About 20 minutes after the main job on a 2-core CPU. RUN=runs/mine picks another run folder.
set -euo pipefail
EXTRAS="${EXTRAS:-compare}" source "$(dirname "$0")/env.sh"
cd "$ROOT"
RUN="${RUN:-runs/shakespeare}"
stage() { echo "[complete guide] $1 after ${SECONDS} s"; }
if [ ! -f "$RUN/config.json" ]; then
  OUT="$RUN" bash scripts/shakespeare.sh
fi
# Chapter 3: the `tiny` preset (~0.9M parameters: ~400 steps a minute here, where the main job's model
# would still be warming up), 60 s per run on the built-in plays, one run after another.
scratchlm ablate --preset tiny --budget 60 --out "$RUN/ablation" --overwrite \
  --change model.norm_position=post --change model.mlp=relu \
  --change model.norm_position=post,model.mlp=relu,model.dropout=0.1
stage "ablation done"
# Chapter 7: the question task (training plays for fine-tuning, held-out plays for the score).
scratchlm data questions --out "$RUN-questions"
scratchlm finetune --init-from "$RUN" --data "$RUN-questions/train.jsonl" --out "$RUN-qa" --overwrite \
  --train.max_time 600
stage "fine-tuning done"
scratchlm eval "$RUN-qa" --task questions --figure "$RUN-qa/figures"
stage "questions scored"
# The guide again: it finds RUN/ablation and RUN-qa (fine-tuned from RUN) on its own.
scratchlm report "$RUN" --memory measure
stage "guide written"
