"""Runs the stand-in training as one of several processes (jax.distributed on CPU):

  python -m tests.dist_helper WORKDIR PROCESS_ID NUM_PROCESSES PORT STEPS

Each process feeds its share of every global batch (rows in process order) and writes
WORKDIR/final_{PROCESS_ID}.npz. With NUM_PROCESSES = 1 it is the single-process reference.
"""

import sys

import jax
import numpy as np

if __name__ == "__main__":
  workdir, pid, nproc, port, steps = sys.argv[1], *map(int, sys.argv[2:6])
  from handflow import sharding, train
  from tests import train_helper as th

  if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    sharding.initialize_distributed(f"localhost:{port}", nproc, pid)

  def host_batches(start):
    rows = 16 // nproc
    for b in th.batches(start):
      yield {k: v[pid * rows : (pid + 1) * rows] for k, v in b.items()}

  state = train.train_and_evaluate(th.config(steps), workdir, th.LinearMethod(), host_batches)
  np.savez(f"{workdir}/final_{pid}.npz", **train.params_to_numpy(state))
