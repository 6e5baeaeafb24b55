"""The interface between a method and the method-agnostic loop (`handflow.train`, `handflow.modes`).

A method is an object with (all array functions pure and jit-able; `batch["mask"]`, 1 real and
0 padding, must be honoured):

- `init(rng, batch) -> (params, extra)`: the trained parameters, and `extra`, the state the
  method keeps that is not trained by gradients (an EMA teacher, centering statistics, queues;
  `{}` when there is none). `batch` is one global batch dict.
- `loss_fn(params, extra, batch, rng, step) -> (loss, (metrics, aux))`: a scalar loss, a dict of
  scalar metrics to log, and `aux`, any pytree `update_extra` needs from the forward pass
  (e.g. the teacher's output statistics for centering). `step` is the update's index ([] int32),
  for schedules inside the objective (a teacher's momentum, a temperature warm-up).
- `update_extra(extra, params, aux, step) -> extra`: called after each update with the new
  parameters; the loop keeps the old `extra` when the step was skipped as non-finite.
- `predict(params, extra, batch) -> dict`: outputs for evaluators and users. Core keys every
  method that predicts a hand returns, in the world frame of the batch's cameras (`T_cam_world`;
  the camera frame for single-view data whose `T_cam_world` is the identity), metres:
  `joints [b, t, 21, 3]` (the config's keypoint convention) and `vertices [b, t, n, 3]`;
  methods add their own keys (UST-Hand: `uv_mode`, `points`, `uncertainty`, ...).
- `param_labels(params) -> pytree of str`: a label per parameter leaf (e.g. "backbone", "head")
  for optimiser groups (`handflow.optim`: learning-rate multipliers and frozen parts match
  labels as well as paths).
- `compute_inputs(batch, dtype) -> batch` (optional, not in `MethodBase`): what the loss sees
  under bfloat16 compute; without it the loop casts every float array.
- `labelled(batch) -> [n]` (optional, not in `MethodBase`; CycleHand, HandMIM): the images
  whose labels the loss may read. With it (and `data.supervised`) the report scores the
  labelled training images' mean hand as a constant row (`handflow.eval.baselines`).
- `load_pretrained(params, restored, cfg) -> (params, report)`: puts a pre-trained tree of
  another run (perhaps another model) into `params` (`handflow.finetune.load`: matching paths,
  `dont_load` and `rename` patterns); a model whose parameters must be adapted on load (a ViT's
  position embeddings to another grid) overrides it.

`MethodBase` gives the defaults: no extra state, one label per top-level parameter collection,
`finetune.load` for pre-trained trees. The loop never imports a method: the registry
(`handflow.methods.registry`) maps `config.method` to a constructor and `handflow.modes` runs it.

Evaluation is not a method's job: evaluators listed in `config.evaluators`
(`handflow.eval.evaluators`) score `predict`'s outputs against the batch.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np

from handflow import finetune


class Method(Protocol):
  name: str

  def init(self, rng, batch: dict) -> tuple[Any, Any]: ...

  def loss_fn(self, params, extra, batch: dict, rng, step) -> tuple[Any, tuple[dict, Any]]: ...

  def update_extra(self, extra, params, aux, step) -> Any: ...

  def predict(self, params, extra, batch: dict) -> dict: ...

  def param_labels(self, params) -> Any: ...

  def load_pretrained(self, params, restored, cfg) -> tuple[Any, finetune.LoadReport]: ...


class MethodBase:
  """Defaults for the optional parts of `Method`."""

  name = "?"

  def update_extra(self, extra, params, aux, step):
    del params, aux, step
    return extra

  def param_labels(self, params):
    """The top-level collection each leaf sits in (e.g. "backbone", "head")."""
    return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}

  def load_pretrained(self, params, restored, cfg):
    return finetune.load(params, restored, cfg)


def loss_weights(loss_cfg, terms, error=ValueError) -> dict:
  """{term: weight} of `terms` from `config.loss` (absent: 0); a negative or non-finite weight
  raises `error` naming the key."""
  weights = {k: float(loss_cfg.get(k, 0.0)) for k in terms}
  for k, w in weights.items():
    if not (np.isfinite(w) and w >= 0):
      raise error(f"config loss.{k}: {w}: a weight must be finite and >= 0")
  return weights


def backbone_head_labels(params) -> dict:
  """ "backbone" for every leaf under a "backbone" module, "head" for the rest (optimiser
  groups of a pre-trained encoder and its new heads)."""
  return {c: {k: jax.tree.map(lambda _, k=k: "backbone" if k == "backbone" else "head", v)
              for k, v in tree.items()} for c, tree in params.items()}  # fmt: skip
