#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment at .venv with handflow installed.
#   bash launch/setup_venv.sh [EXTRAS]     e.g. EXTRAS=test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
