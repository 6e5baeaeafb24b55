"""Checks a run's config against what exists before any work: the part of a run that needs
no data. Nothing is written until every check passed; then a training command records the
resolved config and a hand-model summary in the workdir (eval and predict read the record and
never rewrite it; `handflow.workdir`).

It constructs the method (whose own config checks then fail first), loads the configured hand
model (the shipped open hand or the user's MANO file), compiles
the kernel at the configured batch shape and checks its output is finite, so that a wrong
model path, side or convention fails here with a clear message rather than deep in training.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from handflow import files
from handflow import workdir as run_dir
from handflow.data import pseudo_labels
from handflow.hand import conventions, kernel, loader

# (key, least value) of the loop and data sizes every method reads.
AT_LEAST = (
  ("batch_size", 1), ("num_steps", 1), ("log_every", 1), ("eval_every", 0),
  ("max_nonfinite", 1), ("checkpoint.every", 1), ("checkpoint.keep", 1), ("data.frames", 1),
  ("data.views", 1), ("data.image_size", 1), ("data.crop_size", 0),
)  # fmt: skip


def check_values(config: ml_collections.ConfigDict):
  """Sizes and counts in range, before anything is built (a zero batch or logging interval
  would otherwise fail deep in the run, or never)."""
  for key, least in AT_LEAST:
    node, *path = key.split(".")
    value = config.get(node)
    for part in path:
      value = None if value is None else value.get(part)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f"config {key} = {value!r}: expected an integer >= {least}")
  d = config.get("data")
  if d is None:
    return
  synthetic = d.get("name") == "synthetic_hands"
  # Generated images: a crop larger than the rendering only interpolates it. (Real datasets'
  # sizes are fixed, and the literature's crops may zoom, e.g. 256 px from HanCo's 224.)
  if synthetic and d.get("crop_size", 0) and d.crop_size > d.get("image_size", 0):
    raise ValueError(
      f"config data.crop_size = {d.crop_size} is larger than data.image_size = {d.image_size}, "
      "the size the synthetic images are rendered at: raise data.image_size too (or 0 crops "
      "at the image size)"
    )
  if synthetic and d.get("rig_views") and d.views > d.rig_views:
    raise ValueError(
      f"config data.views = {d.views}, but the generated rig has data.rig_views = "
      f"{d.rig_views} cameras"
    )


def save_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> epath.Path:
  return run_dir.write_record(config, workdir, {})


def check_hand_model(config: ml_collections.ConfigDict) -> dict:
  """Loads and compiles the hand model of `config.hand`; returns a summary dict."""
  model = loader.load(config.hand.model, config.hand.side)
  conv = conventions.get(config.hand.convention)
  conventions.tip_ids(model, conv)  # raises if the convention does not fit the model.
  batch = (config.batch_size, config.data.frames)

  @jax.jit
  def run(pose, betas):
    out = kernel.forward(model, pose, betas, flat_hand_mean=config.hand.flat_hand_mean)
    return conventions.keypoints(model, out.vertices, out.joints, conv)

  pose = jnp.zeros(batch + (45,), jnp.float32)
  betas = jnp.zeros(batch + (model.num_betas,), jnp.float32)
  t0 = time.perf_counter()
  kp = jax.block_until_ready(run(pose, betas))
  compile_s = time.perf_counter() - t0
  if not np.all(np.isfinite(kp)):
    raise FloatingPointError(f"hand model '{model.name}' gives non-finite keypoints at zero pose")
  length = float(np.linalg.norm(kp[0, 0, 12] - kp[0, 0, 0]))  # wrist -> middle fingertip
  return {
    "name": model.name,
    "side": model.side,
    "vertices": model.num_vertices,
    "triangles": int(model.faces.shape[0]),
    "shape_directions": model.num_betas,
    "pose_blend_features": int(model.posedirs.shape[0]),
    "convention": conv.name,
    "hand_length_m": round(length, 4),
    "kernel_compile_s": round(compile_s, 3),
    "batch": list(batch),
  }


def check_mesh_evaluation(config: ml_collections.ConfigDict):
  """Real benchmarks' ground-truth meshes are MANO's: a mesh row scored with the open hand
  would have no MPVPE. Refuse it rather than drop the column silently."""
  from handflow.data import prepare

  pose = (config.get("evaluators", None) or {}).get("pose3d", None)
  if pose is None or config.data.name not in prepare.MANUAL or config.hand.model != "open":
    return
  if any(row[2] for row in pose.get("rows", ())):
    raise ValueError(
      f"{config.data.name}'s ground-truth meshes are MANO's: MPVPE needs "
      "--config.hand.model=/path/to/MANO_RIGHT.pkl (or rows without a vertices key in "
      "config.evaluators.pose3d.rows)"
    )


def check_method(config: ml_collections.ConfigDict):
  """Constructs the method: its config checks (loss weights, ranges, texture) fail here, before
  any dataset is built. Unknown methods are the entry's to report."""
  from handflow.methods import registry

  if config.get("method", "") in registry.METHODS:
    registry.make(config)


def check_init_from(config: ml_collections.ConfigDict):
  """A fine-tuning source must hold a checkpoint before any work (a stage of this run, named
  "stage:<name>", is checked when that stage starts)."""
  from handflow import checkpoint, finetune, stages

  src = finetune.init_from_config(config).get("workdir", "")
  if not src or (src.startswith(stages.PREFIX) and config.get("stages")):
    return
  if src.startswith(stages.PREFIX):
    raise ValueError(
      f"config.init_from.workdir = '{src}' names a stage, but this config runs one stage: set "
      "--config.init_from.workdir to a pre-training run's workdir"
    )
  ckpts = finetune.checkpoint_dir(src)
  if not ckpts.exists() or checkpoint.Checkpointer(ckpts).latest_step() is None:
    raise ValueError(f"config.init_from = {src}: no checkpoint there (train that run first)")


def run(config: ml_collections.ConfigDict, workdir, mode: str = "train") -> dict:
  """Every check, then (train only) the workdir's record; returns the hand-model summary,
  with the config keys an allowed change altered under "changed"."""
  workdir = epath.Path(workdir)
  run_dir.check_writable(workdir)
  check_values(config)
  changes = run_dir.check_record(config, workdir, mode)
  if config.get("data") is not None and "pseudo_labels" in config.data:
    pseudo_labels.from_config(config.data.pseudo_labels)  # a bad preset or key fails here
  check_mesh_evaluation(config)
  check_method(config)
  check_init_from(config)
  summary = check_hand_model(config)
  if mode == "train":
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir.write_record(config, workdir, changes)
    files.write_bytes(workdir / "hand_model.json", (json.dumps(summary, indent=2) + "\n").encode())
  return {**summary, "changed": changes}
