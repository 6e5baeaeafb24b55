#!/usr/bin/env bash
# The local one-command run: sets up .venv, then runs the main job on the embedded default.
#   bash launch/local.sh [WORKDIR] [extra flags, e.g. --config.num_steps=100]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_venv.sh
workdir="${1:-/tmp/handflow/ust}"
shift || true
exec .venv/bin/python -m handflow.main --config=configs/ust.py --workdir="$workdir" "$@"
