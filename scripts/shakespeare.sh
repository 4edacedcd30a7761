#!/usr/bin/env bash
# The main job: built-in Shakespeare corpus -> BPE tokenizer -> GPT trained on this machine
# for ~6 minutes -> samples, bits per byte, and a run folder. Extra arguments go to `scratchlm train`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec scratchlm train --out "${OUT:-runs/shakespeare}" --overwrite "$@"
