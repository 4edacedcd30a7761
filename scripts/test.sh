#!/usr/bin/env bash
# The test suite (fast; slow checks are marked `slow` and run with: scripts/test.sh -m slow).
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/env.sh"
cd "$ROOT"
# One worker per CPU core (pytest-xdist); each worker's torch gets its share of the cores (tests/conftest.py).
# PYTEST_WORKERS=0 runs everything in this process.
exec python -m pytest -n "${PYTEST_WORKERS:-auto}" "$@"
