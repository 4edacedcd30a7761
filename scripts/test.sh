#!/usr/bin/env bash
# The test suite (fast; slow checks are marked `slow` and run with: scripts/test.sh -m slow).
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec python -m pytest "$@"
