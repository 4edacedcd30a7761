#!/usr/bin/env bash
# The main job: built-in Shakespeare corpus -> BPE tokenizer -> GPT trained on this machine
# for ~6 minutes -> samples, bits per byte, attention figures and a run folder; then the
# guide written from this run, RUN/guide.pdf. Extra arguments go to `scratchlm train`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
OUT="${OUT:-runs/shakespeare}"
scratchlm train --out "$OUT" --overwrite "$@"
# For the guide's first chapter: the tokenizers measured on the held-out plays (one vocabulary
# size, 1M training characters; a library that is not installed drops its row).
scratchlm tokenizer compare --quick --out "$OUT/tokenizer-compare"
# The guide: nine chapters from this run (the figures training drew are reused; memory per
# technique is measured with a few steps of each variant, in fresh processes).
scratchlm report "$OUT" --memory measure
