#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite on CPU with 8 fake devices.
#   bash launch/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_venv.sh test
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
exec .venv/bin/python -m pytest tests "$@"
