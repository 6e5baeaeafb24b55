"""How `handflow.main` runs a method: train, eval and predict.

- train: `handflow.train` with periodic evaluation on the **validation** split
  (`config.data.eval_split`), then the report (`handflow.report`): the **test** split
  (`config.data.test_split`) scored once, in one pass, for the trained model (its EMA when the
  run keeps one) and the untrained one;
- eval: the same report for the workdir's newest checkpoint (its `params` item: no optimiser);
- predict: the test split's `predict` outputs of the newest checkpoint, every key, as
  predictions-<process>.npz, with mesh files, overlays and the benchmark's submission file
  (`handflow.exports`).

Model choices (learning rates, steps, ablations) are made on validation; test is read only by
the report and by predict. Datasets without a validation split take a TFDS slice of train
(`eval_split = "train[-5%:]"`, `train_split = "train[:-5%]"`; see configs/common.py).
"""

from __future__ import annotations

import jax
import numpy as np
from etils import epath

from handflow import exports, files, report, sharding, train
from handflow.data import pipeline
from handflow.eval import baselines, evaluators
from handflow.methods import registry
from handflow.viz import figures


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
    config,
    *((s["train"], s["eval"], s["test"]) if mode == "train" else (s["test"],)),
    labelled=mode != "predict",
  )
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  workdir = epath.Path(workdir)
  test = split_batches(config, "test")
  if mode == "predict":
    probe = sharding.global_batch(next(iter(test())), mesh)
    params, extra = train.restore_for_inference(config, method, workdir, probe, mesh)
    return write_predictions(method, params, extra, test, mesh, workdir, config)
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
    config, workdir, method, trained, untrained, test, evals, stats_fn, mesh, calib,
    mean_hand=lambda: training_mean_hand(config, method, s["train"]),
  )  # fmt: skip


def training_mean_hand(config, method, split):
  """The Procrustes mean [21, 3] of the keypoints of the training images whose labels
  `method.labelled` lets it read (`eval.baselines`), or None: a method without a labelled
  subset (UST-Hand reads no 3D label), or no such image."""
  if not (hasattr(method, "labelled") and config.data.get("supervised", False)):
    return None
  batches = pipeline.batches(config, split, train=False, **_host())
  x = baselines.labelled_points(batches, method.labelled)
  return baselines.mean_hand(x) if len(x) else None


def _has_split(config, split) -> bool:
  try:
    pipeline.check_splits(config, split)
  except pipeline.DataError:
    return False
  return True


def write_predictions(method, params, extra, batches, mesh, workdir, config=None):
  """predictions-<process>.npz: per test clip (clip_id; and image_id for single images) every
  `predict` output (UST-Hand: world keypoints and mesh in metres, 2D modes and hypotheses in
  crop pixels, the point cloud and per-joint uncertainty); padding dropped. Each process writes
  its own clips (a local workdir per host, or a shared filesystem). With a config, also the
  mesh files, overlays and benchmark submission of `handflow.exports`."""
  fn = jax.jit(method.predict, out_shardings=sharding.batch_sharding(mesh))
  want = int(config.get("predict", {}).get("overlays", 0)) if config is not None else 0
  model = getattr(method, "model", None)
  title = getattr(method, "title", getattr(method, "name", "handflow"))
  out, overlays = {}, 0
  for local in batches():
    pred = fn(params, extra, sharding.global_batch(local, mesh))
    keep = np.asarray(local["mask"]) > 0
    rows = {k: sharding.local_rows(v) for k, v in pred.items()}  # this host's rows
    for k, v in rows.items():
      out.setdefault(k, []).append(v[keep])
    for k in ("clip_id", "image_id"):  # image_id: single-image data (`data.single_view`)
      if k in local:
        out.setdefault(k, []).append(np.asarray(local[k])[keep])
    for i in np.flatnonzero(keep):
      if overlays >= want or model is None or "vertices" not in rows:
        break
      overlays += _overlay(workdir, model, local, rows, int(i), title)
  arrays = {k: np.concatenate(v) for k, v in out.items()}
  path = workdir / f"predictions-{jax.process_index():03d}.npz"
  files.write_atomic(path, lambda f: np.savez(f, **arrays))
  what = "images'" if "image_id" in arrays else "clips'"
  print(f"handflow: wrote {len(arrays['clip_id'])} {what} predictions to {path}")
  if config is None:
    return arrays
  limit = int(config.get("predict", {}).get("meshes", -1))
  if model is not None and "vertices" in arrays and limit != 0:
    n = exports.write_meshes(workdir / "meshes", arrays, np.asarray(model.faces), limit, title)
    print(f"handflow: wrote {n} mesh files (.obj) to {workdir / 'meshes'}")
  if overlays:
    n = len(list((workdir / "overlays").glob("*.png")))
    print(f"handflow: wrote {n} overlays ({overlays} samples) to {workdir / 'overlays'}")
  line = exports.write_submission(config, arrays, workdir)
  if line:
    print(f"handflow: {line}")
  return arrays


def _overlay(workdir, model, local, rows, i, title) -> int:
  """overlays/<sample>.png for row i of this host's batch (each frame of a clip)."""
  frames = np.asarray(rows["vertices"]).shape[1]
  one = {k: np.asarray(v)[i : i + 1] for k, v in rows.items()}
  ids = {k: np.asarray(local[k])[i : i + 1] for k in ("clip_id", "image_id") if k in local}
  names = exports.sample_names({"vertices": one["vertices"], **ids})
  for f in range(frames):
    png = figures.overlay_png(model, local, rows, title=f"{title}: {names[f]}", clip=i, frame=f)
    files.write_bytes(workdir / "overlays" / f"{names[f]}.png", png)
  return 1
