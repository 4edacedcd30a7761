#!/usr/bin/env bash
# The main job: built-in Shakespeare corpus -> BPE tokenizer -> GPT trained on this machine
# for ~6 minutes -> samples, bits per byte, attention figures and a run folder; then the
# guide written from this run, RUN/guide.pdf. Extra arguments go to `scratchlm train`.
set -euo pipefail
EXTRAS="${EXTRAS:-compare}" source "$(dirname "$0")/env.sh"  # compare: the tokenizer peers for chapter 1
cd "$ROOT"
OUT="${OUT:-runs/shakespeare}"
stage() { echo "[main job] $1 after ${SECONDS} s"; }
stage "set-up done"
scratchlm train --out "$OUT" --overwrite "$@"
stage "training, samples and figures done"
# For the guide's first chapter: the tokenizers measured on the held-out plays (one vocabulary
# size, 1M training characters: ours, SentencePiece, tiktoken, HF tokenizers, word- and character-level).
scratchlm tokenizer compare --quick --out "$OUT/tokenizer-compare"
stage "tokenizer comparison done"
# The guide: nine chapters from this run (the figures training drew are reused; memory per
# technique is measured with a few steps of each variant, in fresh processes).
scratchlm report "$OUT" --memory measure
stage "guide written"
