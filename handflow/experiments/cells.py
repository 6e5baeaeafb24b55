"""What every claim experiment shares: one resumable training cell, and bootstrap intervals.

- `run_one(config, workdir)`: trains the config (no evaluation on the way: nothing is chosen),
  scores its test split once, and keeps the results in DIR/final.json; a finished cell is
  reused, so an interrupted experiment resumes.
- `bootstrap_ci(x)`: mean and 95% percentile-bootstrap interval of the mean over seeds;
  `fmt(ci)`: "mean [lo, hi]".
- `constant(config, bins)`: the constant a single-image regressor that learned nothing
  image-specific converges to, the Procrustes mean of the labelled training images' keypoints
  (`eval.baselines`), scored on the test split like a cell (PA metrics only), optionally per
  camera-palm angle bin. It depends on the labels a config reads, not on its seed.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from handflow import files, modes, sharding, train
from handflow.data import pipeline
from handflow.eval import baselines, evaluators
from handflow.geometry import viewpoint
from handflow.methods import registry, single_image

PROTOCOL = "freihand"
CONSTANT = "training images' mean hand (constant)"  # its row in the experiments' tables


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


def constant(config, bins: bool = False) -> dict:
  """{"freihand/PA-MPJPE": mm, ...} of the labelled training images' mean hand on the test split
  (and "view/<bin>/PA-MPJPE", ... per camera-palm angle bin with `bins`); {} when the config
  reads no labels."""
  ref = modes.training_mean_hand(config, registry.make(config), "train")
  if ref is None:
    return {}
  xyz, angle = [], []
  for b in pipeline.batches(config, "test", train=False):
    real = np.asarray(b["mask"]).reshape(-1) > 0
    cam = np.asarray(single_image.gt_cam(b))[real]
    xyz.append(cam)
    angle.append(np.asarray(viewpoint.palm_angle(cam, config.hand.side)))
  xyz, angle = np.concatenate(xyz), np.concatenate(angle)
  out = baselines.constant_metrics(ref, xyz, (PROTOCOL,))
  if bins:
    for name, sel in zip(viewpoint.bin_names(), viewpoint.bin_masks(angle), strict=True):
      sel = np.asarray(sel)
      if sel.any():
        per = baselines.constant_metrics(ref, xyz[sel], (PROTOCOL,))
        out.update({k.replace(f"{PROTOCOL}/", f"view/{name}/"): v for k, v in per.items()})
  return out
