#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite on CPU with 8 fake devices.
#   bash launch/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_venv.sh test
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
# One compilation cache for the run: the tests and the entry points they start as subprocesses
# compile many of the same tiny steps (a fresh directory: nothing carries over between runs).
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="$cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
.venv/bin/python -m pytest tests "$@"
