"""How fast a per-view network learns 2D keypoints on a config's data: the probe behind the
single-image methods' budgets.

  python -m handflow.experiments.view_learning --workdir=DIR [--steps=3000] [--every=500]
      [--cells=lr1e-3,lr3e-3,stem2] [--config=configs/cyclehand.py] [--config.data.KEY=...]

Every method here reads hand crops through a ResNet whose feature map has to say where the
joints are (UST-Hand's hypotheses, CycleHand's and HandMIM's regressors). This probe trains only
that: a ResNet (`models.resnet.ResNet`, the config's `model.backbone_depth` / `backbone_width`
when it has them, else 10 / 32; stride-4 map) and a 1x1 convolution to 21 heatmaps, with the
heatmap cross-entropy (`single_image.heatmap_term`, averaged over the joints)
against the ground-truth keypoints of every training image (the config's crops and
augmentation, `data.supervised` on), Adam at the cell's learning rate, no other term. Every
`--every` steps it scores the validation split: the soft-argmax error in crop pixels (mean,
median; the wrist and the five fingertips) and the cross-entropy (its floor, a one-cell
Gaussian, is about 2.8; uniform over a 16 x 16 map is 5.5). If this probe cannot place the
joints within a few pixels in a budget, no head on the same backbone reads finger articulation
in it. Cells: `lr<rate>` (stem stride 4) and `stem2` (stride-2 stem, 1e-3). A finished cell
(DIR/<cell>.json) is reused; DIR/view_learning.md holds the table.
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import files
from handflow.data import pipeline, prepare
from handflow.methods import single_image
from handflow.models import heatmaps, resnet

_FLAGS = {}
JOINTS = {
  "wrist": 0,
  "thumb tip": 4,
  "index tip": 8,
  "middle tip": 12,
  "ring tip": 16,
  "pinky tip": 20,
}


def _define_flags():
  """Defined only when run (the experiments share flag names; tests import them all)."""
  _FLAGS["config"] = config_flags.DEFINE_config_file(
    "config", "configs/cyclehand.py", "Data config (single-view crops)."
  )
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "Directory for the cells and table.")
  _FLAGS["steps"] = flags.DEFINE_integer("steps", 3000, "Training steps per cell.")
  _FLAGS["every"] = flags.DEFINE_integer("every", 500, "Validation interval (steps).")
  _FLAGS["cells"] = flags.DEFINE_list("cells", ["lr1e-3", "lr3e-3", "stem2"], "Cells.")
  flags.mark_flags_as_required(["workdir"])


def parse_cell(name: str) -> tuple[float, int]:
  """ "lr3e-3" -> (3e-3, 4); "stem2" -> (1e-3, 2)."""
  if name == "stem2":
    return 1e-3, 2
  if name.startswith("lr"):
    try:
      return float(name[2:]), 4
    except ValueError:
      pass
  raise ValueError(f"cell '{name}': expected lr<rate> (e.g. lr1e-3) or stem2")


class Probe(nn.Module):
  depth: int = 10
  width: int = 32
  stem_stride: int = 4

  @nn.compact
  def __call__(self, images):
    fmap = resnet.ResNet(
      depth=self.depth, width=self.width, out_stride=4, features=128, stem_stride=self.stem_stride
    )(images)
    return heatmaps.log_probs(nn.Conv(heatmaps.NUM_KEYPOINTS, (1, 1))(fmap))


def _flat(batch):
  """Images [n, s, s, 3], keypoints uv [n, 21, 2] (crop pixels) and real-sample mask [n]."""
  img = np.asarray(batch["images"])
  s = img.shape[-2]
  n = img.reshape(-1, s, s, 3).shape[0]
  real = np.repeat(np.asarray(batch["mask"]), n // np.asarray(batch["mask"]).shape[0])
  return img.reshape(n, s, s, 3), np.asarray(batch["uv"]).reshape(n, 21, 2), real


def soft_argmax_errors(log_heatmap, uv, size: int):
  """Per-joint distance [n, 21] (crop pixels) between the soft-argmax of log_heatmap
  [n, h, w, 21] and uv [n, 21, 2] (pixel centres at integer coordinates, as `uv`)."""
  return jnp.linalg.norm(heatmaps.soft_argmax(log_heatmap) * size - 0.5 - uv, axis=-1)


def run_cell(config, name: str, steps: int, every: int, workdir: epath.Path) -> dict:
  done = workdir / f"{name}.json"
  if done.exists():
    return json.loads(done.read_text())
  lr, stem = parse_cell(name)
  m = config.get("model", {})
  net = Probe(m.get("backbone_depth", 10), m.get("backbone_width", 32), stem_stride=stem)
  train_it = pipeline.batches(config, "train", train=True, seed=config.seed)
  x, uv, _ = _flat(next(train_it))
  size = x.shape[1]
  params = net.init(jax.random.key(config.seed), jnp.asarray(x))
  tx = optax.adam(lr)
  opt = tx.init(params)

  def loss_fn(p, x, uv, real):
    ce = single_image.heatmap_term(net.apply(p, x), {"uv": uv}, size)
    return jnp.sum(ce * real) / jnp.maximum(jnp.sum(real), 1.0)

  @jax.jit
  def step(p, o, x, uv, real):
    loss, g = jax.value_and_grad(loss_fn)(p, x, uv, real)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), o, loss

  @jax.jit
  def score(p, x, uv):
    log_hm = net.apply(p, x)
    return single_image.heatmap_term(log_hm, {"uv": uv}, size), soft_argmax_errors(log_hm, uv, size)

  def validate(p):
    ce, err = [], []
    for b in pipeline.batches(config, "validation", train=False):
      x, uv, real = _flat(b)
      c, e = score(p, jnp.asarray(x), jnp.asarray(uv))
      ce.append(np.asarray(c)[real > 0])
      err.append(np.asarray(e)[real > 0])
    ce, err = np.concatenate(ce), np.concatenate(err)
    row = {"ce": float(ce.mean()), "px_mean": float(err.mean()), "px_median": float(np.median(err))}
    row.update({f"px_{k}": float(err[:, j].mean()) for k, j in JOINTS.items()})
    return row

  curve, since, t0 = [], [], time.time()
  for i in range(1, steps + 1):
    x, uv, real = _flat(next(train_it))
    params, opt, loss = step(params, opt, jnp.asarray(x), jnp.asarray(uv), jnp.asarray(real))
    since.append(loss)  # read back at validation only: no host sync per step
    if i % every == 0 or i == steps:
      if not np.all(np.isfinite(np.asarray(jnp.stack(since)))):
        raise FloatingPointError(f"view_learning cell {name}: non-finite loss by step {i}")
      since = []
      curve.append({"step": i, "seconds": time.time() - t0, **validate(params)})
      print(
        f"{name} step {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in curve[-1].items()), flush=True
      )
  out = {
    "cell": name,
    "lr": lr,
    "stem_stride": stem,
    "images_per_step": int(x.shape[0]),
    "curve": curve,
  }
  if jax.process_index() == 0:
    files.write_text_atomic(done, json.dumps(out, sort_keys=True))
  return out


def table(results: list[dict], data_name: str) -> str:
  keys = ["ce", "px_mean", "px_median", *(f"px_{k}" for k in JOINTS)]
  lines = [
    f"# Per-view 2D learning on {data_name} (validation; crop pixels)",
    "",
    "| cell | step | images seen | " + " | ".join(keys) + " |",
    "|---" * (len(keys) + 3) + "|",
  ]
  for r in results:
    for row in r["curve"]:
      vals = " | ".join(f"{row[k]:.2f}" for k in keys)
      lines.append(
        f"| {r['cell']} | {row['step']} | {row['step'] * r['images_per_step']} | {vals} |"
      )
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  config = _FLAGS["config"].value
  config.data.supervised = True  # this probe reads the ground-truth keypoints
  for cell in _FLAGS["cells"].value:
    parse_cell(cell)  # refuse a bad cell name before any work
  workdir = epath.Path(_FLAGS["workdir"].value)
  workdir.mkdir(parents=True, exist_ok=True)
  prepare.prepare(config)
  results = [
    run_cell(config, c, _FLAGS["steps"].value, _FLAGS["every"].value, workdir)
    for c in _FLAGS["cells"].value
  ]
  name = prepare.dataset_builder(config).builder_config.name
  md = table(results, f"{config.data.name} {name}, crops {config.data.crop_size} px")
  files.write_text_atomic(workdir / "view_learning.md", md)
  print(md)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
