#!/usr/bin/env bash
# Cloud TPU pod runs of handflow, end to end. Every parameter is an environment variable:
#
#   TPU_NAME      node name                      (default: handflow)
#   TPU_ZONE      zone                           (default: us-central2-b)
#   TPU_TYPE      accelerator type               (default: v4-32, i.e. 4 hosts)
#   TPU_PROJECT   GCP project                    (default: gcloud's configured project)
#   TPU_RUNTIME   TPU VM runtime version         (default: tpu-ubuntu2204-base)
#   TPU_BUCKET    GCS bucket for workdirs        (required by `run`)
#   TPU_SPOT      1 to ask for spot capacity     (default: 0)
#   JAX_TPU_PIP   the jax TPU requirement        (default: "jax[tpu]")
#
# Subcommands (in the order of a run):
#   bash launch/tpu.sh create            queue the TPU (queued resources) and wait until ACTIVE
#   bash launch/tpu.sh sync              copy this checkout (git HEAD) to every worker
#   bash launch/tpu.sh setup             create .venv on every worker, install handflow + jax[tpu]
#   bash launch/tpu.sh run NAME ARGS...  run `python -m handflow.main ARGS` on --worker=all, in the
#                                        background, workdir gs://$TPU_BUCKET/handflow/NAME
#   bash launch/tpu.sh logs              follow worker 0's log
#   bash launch/tpu.sh stop              stop the run on every worker (SIGTERM: it checkpoints)
#   bash launch/tpu.sh delete            delete the TPU and its queued resource
#
# Example:
#   TPU_BUCKET=my-bucket bash launch/tpu.sh run ust_hanco --config=configs/ust.py:hanco \
#     --config.data.manual_dir=/mnt/data/HanCo
# The same command runs on every host; HANDFLOW_DISTRIBUTED=1 makes each call
# jax.distributed.initialize(), which finds the coordinator on a TPU pod by itself. A run that
# is stopped or preempted resumes from its last checkpoint when started again with the same NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

TPU_NAME="${TPU_NAME:-handflow}"
TPU_ZONE="${TPU_ZONE:-us-central2-b}"
TPU_TYPE="${TPU_TYPE:-v4-32}"
TPU_RUNTIME="${TPU_RUNTIME:-tpu-ubuntu2204-base}"
TPU_SPOT="${TPU_SPOT:-0}"
JAX_TPU_PIP="${JAX_TPU_PIP:-jax[tpu]}"
PROJECT_FLAG=()
if [ -n "${TPU_PROJECT:-}" ]; then PROJECT_FLAG=(--project="$TPU_PROJECT"); fi

tpu() { gcloud compute tpus "$@" --zone="$TPU_ZONE" "${PROJECT_FLAG[@]}"; }
on_all() { tpu tpu-vm ssh "$TPU_NAME" --worker=all --command="$1"; }

cmd="${1:-help}"
shift || true
case "$cmd" in
  create)
    spot=()
    if [ "$TPU_SPOT" = "1" ]; then spot=(--spot); fi
    tpu queued-resources create "$TPU_NAME-qr" --node-id="$TPU_NAME" \
      --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_RUNTIME" "${spot[@]}"
    echo "waiting for $TPU_NAME-qr to become ACTIVE ..."
    until [ "$(tpu queued-resources describe "$TPU_NAME-qr" --format='value(state.state)')" = "ACTIVE" ]; do
      sleep 30
    done
    ;;
  sync)
    tar=$(mktemp --suffix=.tar.gz)
    git archive --format=tar.gz -o "$tar" HEAD
    tpu tpu-vm scp "$tar" "$TPU_NAME:~/handflow.tar.gz" --worker=all
    on_all "rm -rf ~/handflow && mkdir -p ~/handflow && tar -xzf ~/handflow.tar.gz -C ~/handflow"
    rm -f "$tar"
    ;;
  setup)
    on_all "cd ~/handflow && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
      && .venv/bin/pip install -q -e . '$JAX_TPU_PIP'"
    ;;
  run)
    name="${1:?usage: launch/tpu.sh run NAME [handflow.main flags]}"
    shift
    : "${TPU_BUCKET:?set TPU_BUCKET to a GCS bucket for the workdir}"
    args=$(printf '%q ' "$@")
    on_all "cd ~/handflow && HANDFLOW_DISTRIBUTED=1 nohup .venv/bin/python -m handflow.main \
      --workdir=gs://$TPU_BUCKET/handflow/$name $args > ~/handflow.log 2>&1 &"
    echo "started $name; follow with: bash launch/tpu.sh logs"
    ;;
  logs)
    tpu tpu-vm ssh "$TPU_NAME" --worker=0 --command="tail -n 100 -f ~/handflow.log"
    ;;
  stop)
    on_all "pkill -TERM -f handflow.main || true"
    ;;
  delete)
    tpu queued-resources delete "$TPU_NAME-qr" --force --quiet
    ;;
  *)
    sed -n '2,30p' "$0"
    ;;
esac
