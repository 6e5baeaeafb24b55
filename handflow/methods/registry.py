"""Which methods exist, and how `handflow.main` runs them.

- train: train with periodic evaluation (`handflow.train`), then the method's report, if it has
  one (UST-Hand: test tables for the trained and untrained model and the teacher, calibration,
  figures; see `ust_report`);
- eval: the report of the newest checkpoint in the workdir;
- predict: the test split's predictions of the newest checkpoint, as predictions.npz.
"""

from __future__ import annotations

import jax
import numpy as np
from etils import epath

from handflow import checkpoint, files, optim, sharding, train
from handflow.data import pipeline
from handflow.methods import ust_report
from handflow.methods.keypoints2d import Keypoints2D
from handflow.methods.ust import UST


def _keypoints2d(config):
  return Keypoints2D(width=config.model.backbone_width)


METHODS = {"keypoints2d": _keypoints2d, "ust": UST}
REPORTS = {"ust": ust_report.report}


def run(mode: str, config, workdir):
  """Runs `mode` ("train", "eval" or "predict") of the config's method; returns its result."""
  method = METHODS[config.method](config)
  pipeline.check_splits(config, "train", "test")
  host = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_batches = lambda start: pipeline.batches(
    config, "train", train=True, start_step=start, **host
  )
  eval_batches = lambda: pipeline.batches(config, "test", train=False, **host)
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  if mode == "train":
    state = train.train_and_evaluate(config, workdir, method, train_batches, eval_batches)
    params = state.params if state.ema is None else state.ema
  elif mode in ("eval", "predict"):
    params = _restore_params(config, workdir, method, train_batches, mesh)
  else:
    raise ValueError(f"unknown mode '{mode}'")
  if mode == "predict":
    if config.method not in REPORTS:
      raise ValueError(f"mode 'predict' is not available for method '{config.method}'")
    return write_predictions(method, params, eval_batches, mesh, epath.Path(workdir))
  if config.method not in REPORTS:
    if mode == "eval":
      return train.evaluate(train.make_eval_stats(method, mesh), params, eval_batches, mesh)
    return state
  probe = sharding.global_batch(next(iter(train_batches(0))), mesh)
  init = jax.jit(method.init_params)(jax.random.key(int(config.seed)), probe)
  return REPORTS[config.method](config, workdir, method, params, init, eval_batches, mesh)


def _restore_params(config, workdir, method, train_batches, mesh):
  """The newest checkpoint's parameters (its EMA when the run kept one)."""
  ckpt = checkpoint.Checkpointer(epath.Path(workdir) / "checkpoints")
  if ckpt.latest_step() is None:
    raise checkpoint.CheckpointError(
      f"no checkpoint in {epath.Path(workdir) / 'checkpoints'}: train first (--mode=train)"
    )
  tx = optim.make_optimizer(config.optim, config.num_steps)
  probe = sharding.global_batch(next(iter(train_batches(0))), mesh)
  ema = float(config.optim.get("ema_decay", 0.0)) > 0
  state, shardings = train.create_train_state(
    method, tx, jax.random.key(int(config.seed)), probe, mesh, config.param_sharding, ema
  )
  _, state, _ = ckpt.restore_latest(checkpoint.abstract_like(state, shardings))
  return state.params if state.ema is None else state.ema


def write_predictions(method, params, eval_batches, mesh, workdir):
  """predictions-<process>.npz: per test clip (clip_id) the world keypoints and mesh (metres),
  the per-joint uncertainty (metres) and the 2D modes (crop pixels); padding dropped. Each
  process writes its own clips (a local workdir per host, or a shared filesystem)."""
  fn = jax.jit(method.predict, out_shardings=sharding.batch_sharding(mesh))
  keys = ("joints", "vertices", "uncertainty", "uv_mode")
  out = {k: [] for k in keys + ("clip_id",)}
  for local in eval_batches():
    pred = fn(params, sharding.global_batch(local, mesh))
    keep = np.asarray(local["mask"]) > 0
    for k in keys:  # this host's rows of the global batch
      shards = sorted(pred[k].addressable_shards, key=lambda s: s.index[0].start or 0)
      rows = np.concatenate([np.asarray(s.data) for s in shards])
      out[k].append(rows[keep])
    out["clip_id"].append(np.asarray(local["clip_id"])[keep])
  arrays = {k: np.concatenate(v) for k, v in out.items()}
  path = workdir / f"predictions-{jax.process_index():03d}.npz"
  files.write_atomic(path, lambda f: np.savez(f, **arrays))
  print(f"handflow: wrote {len(arrays['clip_id'])} clips' predictions to {path}")
  return arrays
