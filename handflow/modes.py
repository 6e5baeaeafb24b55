"""How `handflow.main` runs a method: train, eval and predict.

- train: `handflow.train` with periodic evaluation on the **validation** split
  (`config.data.eval_split`), then the report (`handflow.report`): the **test** split
  (`config.data.test_split`) scored once, in one pass, for the trained model (its EMA when the
  run keeps one) and the untrained one;
- eval: the same report for the workdir's newest checkpoint (its `params` item: no optimiser);
- predict: the test split's `predict` outputs of the newest checkpoint, every key, as
  predictions-<process>.npz.

Model choices (learning rates, steps, ablations) are made on validation; test is read only by
the report and by predict. Datasets without a validation split take a TFDS slice of train
(`eval_split = "train[-5%:]"`, `train_split = "train[:-5%]"`; see configs/common.py).
"""

from __future__ import annotations

import jax
import numpy as np
from etils import epath

from handflow import files, report, sharding, train
from handflow.data import pipeline
from handflow.eval import evaluators
from handflow.methods import registry


def splits(config) -> dict:
  d = config.data
  return {
    "train": d.get("train_split", "train"),
    "eval": d.get("eval_split", "validation"),
    "test": d.get("test_split", "test"),
  }


def _host():
  return dict(process_index=jax.process_index(), process_count=jax.process_count())


def train_batches(config):
  split = splits(config)["train"]
  return lambda start: pipeline.batches(config, split, train=True, start_step=start, **_host())


def split_batches(config, which: str):
  """One padded pass over the `which` ("eval" | "test") split, as a callable."""
  split = splits(config)[which]
  return lambda: pipeline.batches(config, split, train=False, **_host())


def run(mode: str, config, workdir):
  """Runs `mode` ("train", "eval" or "predict") of the config's method; returns its result."""
  if mode not in ("train", "eval", "predict"):
    raise ValueError(f"unknown mode '{mode}'")
  method = registry.make(config)
  s = splits(config)
  pipeline.check_splits(
    config, *((s["train"], s["eval"], s["test"]) if mode == "train" else (s["test"],))
  )
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  workdir = epath.Path(workdir)
  test = split_batches(config, "test")
  if mode == "predict":
    probe = sharding.global_batch(next(iter(test())), mesh)
    params, extra = train.restore_for_inference(config, method, workdir, probe, mesh)
    return write_predictions(method, params, extra, test, mesh, workdir)
  evals = evaluators.from_config(config)
  stats_fn = evaluators.make_stats_fn(method, evals, mesh)
  if mode == "train":
    val = split_batches(config, "eval")
    evaluate = lambda params, extra: evaluators.evaluate(stats_fn, params, extra, val(), mesh)
    state = train.train_and_evaluate(config, workdir, method, train_batches(config), evaluate)
    trained = (state.eval_params, state.extra)
    probe = sharding.global_batch(next(iter(train_batches(config)(0))), mesh)
  else:
    probe = sharding.global_batch(next(iter(test())), mesh)
    trained = train.restore_for_inference(config, method, workdir, probe, mesh)
  untrained = jax.jit(method.init)(jax.random.key(int(config.seed)), probe)
  # On the trained model's shardings, so that the compiled statistics serve both models.
  untrained = jax.device_put(untrained, jax.tree.map(lambda x: x.sharding, trained))
  calib = split_batches(config, "eval") if _has_split(config, s["eval"]) else None
  return report.write(
    config, workdir, method, trained, untrained, test, evals, stats_fn, mesh, calib
  )


def _has_split(config, split) -> bool:
  try:
    pipeline.check_splits(config, split)
  except pipeline.DataError:
    return False
  return True


def write_predictions(method, params, extra, batches, mesh, workdir):
  """predictions-<process>.npz: per test clip (clip_id; and image_id for single images) every
  `predict` output (UST-Hand: world
  keypoints and mesh in metres, 2D modes and hypotheses in crop pixels, the point cloud and
  per-joint uncertainty); padding dropped. Each process writes its own clips (a local workdir
  per host, or a shared filesystem)."""
  fn = jax.jit(method.predict, out_shardings=sharding.batch_sharding(mesh))
  out = {}
  for local in batches():
    pred = fn(params, extra, sharding.global_batch(local, mesh))
    keep = np.asarray(local["mask"]) > 0
    for k, v in pred.items():  # this host's rows of the global batch
      out.setdefault(k, []).append(sharding.local_rows(v)[keep])
    for k in ("clip_id", "image_id"):  # image_id: single-image data (`data.single_view`)
      if k in local:
        out.setdefault(k, []).append(np.asarray(local[k])[keep])
  arrays = {k: np.concatenate(v) for k, v in out.items()}
  path = workdir / f"predictions-{jax.process_index():03d}.npz"
  files.write_atomic(path, lambda f: np.savez(f, **arrays))
  what = "images'" if "image_id" in arrays else "clips'"
  print(f"handflow: wrote {len(arrays['clip_id'])} {what} predictions to {path}")
  return arrays
