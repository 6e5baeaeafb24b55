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
# Two worker processes: much of the suite's time is XLA compiling on one thread, so a 2-core
# machine runs two tests at once (30:46 -> 18:07 for the whole suite on one such machine).
# HANDFLOW_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest tests -n "${HANDFLOW_TEST_WORKERS:-2}" "$@"
