# Shared by scripts/demo.sh and scripts/test.sh: create or reuse ./.venv and install sparsec into it.
# Usage: source scripts/env.sh [extra]   (extra: "" for the core, "test" for the test suite)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "sparsec needs Python >= 3.10 ($PY is $("$PY" --version 2>&1))" >&2; exit 1
fi
VENV="${SPARSEC_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[sparsec] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi
EXTRA="${1:-}"
STAMP="$VENV/.sparsec-installed${EXTRA:+-$EXTRA}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "[sparsec] installing sparsec${EXTRA:+[$EXTRA]} into $VENV"
  LOG="$VENV/pip-install.log"
  if ! "$VENV/bin/python" -m pip install -q -e ".${EXTRA:+[$EXTRA]}" >"$LOG" 2>&1; then
    cat "$LOG" >&2; echo "[sparsec] pip install failed (log above)" >&2; exit 1
  fi
  "$VENV/bin/python" -c "import sparsec" && touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
