# Sourced by the two README commands: create or reuse .venv and install scratchlm into it.
#   - torch: a torch the base Python already has (e.g. a CUDA build) is kept, by giving the
#     venv access to the system site-packages; otherwise torch==2.13.0 is installed
#     (on Linux x86_64 PyPI serves the CUDA build; this project's CI machine has a CPU
#     build of that version on disk, which pip picks up in seconds).
#   - EXTRAS=test installs the test tools as well.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${SCRATCHLM_VENV:-$ROOT/.venv}"
# a venv whose creation was interrupted (no pip in it) is made again
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "[setup] $VENV is incomplete (no pip): creating it again"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] keeping the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
stamp="$VENV/.scratchlm-installed-${EXTRAS:-core}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  if ! "$VPY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0"
    "$VPY" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  fi
  spec="."
  [ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
  echo "[setup] installing scratchlm${EXTRAS:+[$EXTRAS]} into $VENV"
  (cd "$ROOT" && "$VPY" -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true)
  "$VPY" -c "import scratchlm" && touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
