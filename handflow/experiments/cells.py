"""What every claim experiment shares: one resumable training cell, and bootstrap intervals.

- `run_one(config, workdir)`: trains the config (no evaluation on the way: nothing is chosen),
  scores its test split once, and keeps the results in DIR/final.json; a finished cell is
  reused, so an interrupted experiment resumes.
- `bootstrap_ci(x)`: mean and 95% percentile-bootstrap interval of the mean over seeds;
  `fmt(ci)`: "mean [lo, hi]".
"""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from handflow import files, modes, sharding, train
from handflow.eval import evaluators
from handflow.methods import registry


def run_one(config, workdir: epath.Path) -> dict:
  done = workdir / "final.json"
  if done.exists():
    return json.loads(done.read_text())
  method = registry.make(config)
  state = train.train_and_evaluate(config, workdir, method, modes.train_batches(config))
  mesh = sharding.make_mesh(dict(config.mesh))
  stats_fn = evaluators.make_stats_fn(method, evaluators.from_config(config), mesh)
  test = modes.split_batches(config, "test")()
  results = evaluators.evaluate(stats_fn, state.eval_params, state.extra, test, mesh)
  if jax.process_index() == 0:
    files.write_text_atomic(done, json.dumps(results, sort_keys=True))
  return results


def bootstrap_ci(x, n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
  """Mean and 95% percentile-bootstrap interval of the mean of x [seeds] (NaN entries left out:
  a metric a cell did not record)."""
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if x.size == 0:
    return (float("nan"),) * 3
  idx = np.random.default_rng(seed).integers(0, x.size, (n, x.size))
  means = x[idx].mean(-1)
  return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def fmt(ci, digits: int = 1) -> str:
  m, lo, hi = ci
  return "–" if not np.isfinite(m) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
