"""Checkpoints: the only module that talks to orbax.

  ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=3)
  ckpt.save(step, state, params, meta={"data_position": ...})   # async; ckpt.wait() to block
  restored = ckpt.restore_latest(abstract_state)                # None when there is no checkpoint
  params = ckpt.restore_params(step, abstract_params)           # the params item alone
  tree = ckpt.restore_params(step)                              # ... as saved, any model

Each step holds three items: `state` (everything resuming needs: parameters, optimiser state,
the method's extra state, step, RNG key data), `params` (what evaluation, prediction and
fine-tuning read: {"params": the parameters (the EMA when the run keeps one), "extra": the
method's extra state}) and `meta` (JSON: data position, preemption flag). Reading `params` alone
needs neither the optimiser nor the training state's structure, and reading it without a target
(`restore_params(step)`) gives the tree as saved, so another model can take what fits
(`handflow.finetune`). `abstract_*` are pytrees of jax.ShapeDtypeStruct carrying the shardings
to restore onto, so a run restores onto a different mesh than the one that saved. A checkpoint
that cannot be read is reported by path, never silently replaced by a fresh start.
"""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

ITEMS = ("state", "params", "meta")


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read."""


def abstract_like(state, shardings=None):
  """jax.ShapeDtypeStruct pytree of `state`, with `shardings` (a matching pytree) if given."""
  if shardings is None:
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state
    )
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )


class Checkpointer:
  def __init__(self, directory, *, max_to_keep: int = 3, save_interval_steps: int = 1):
    directory = epath.Path(directory)
    self.directory = directory if "://" in str(directory) else directory.resolve()
    # The interval is enforced here: orbax would also save the first step it is given.
    self.every = max(1, int(save_interval_steps))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=1, create=True
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
    self, step: int, state, params, meta: dict | None = None, *, force: bool = False
  ) -> bool:
    """Saves (asynchronously) every `save_interval_steps` steps, or when `force`d; returns
    whether it did."""
    if not force and step % self.every:
      return False
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      params=ocp.args.StandardSave(params),
      meta=ocp.args.JsonSave(meta or {}),
    )
    return self._manager.save(int(step), args=args, force=force)

  def wait(self):
    self._manager.wait_until_finished()

  def _check_shapes(self, step: int, name: str, abstract):
    """Names the leaves whose saved shape differs from `abstract`'s (orbax would fail deep in
    its threads, without the path)."""
    try:
      saved = self._manager.item_metadata(int(step))[name]
    except Exception:  # noqa: BLE001 - no metadata to compare: orbax's own error stands.
      return
    saved = getattr(saved, "tree", saved)
    want = {
      jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(abstract)
    }
    have = {
      jax.tree_util.keystr(p): tuple(x.shape)
      for p, x in jax.tree_util.tree_leaves_with_path(saved)
      if hasattr(x, "shape")
    }
    bad = [f"{k} saved {have[k]}, wanted {tuple(v)}" for k, v in want.items() if k in have
           and tuple(have[k]) != tuple(v)]  # fmt: skip
    if bad:
      raise CheckpointError(
        f"checkpoint {self.directory / str(step)} was written by another model: "
        + "; ".join(bad[:5])
        + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        + ": use the config that wrote it, or a new workdir"
      )

  def _restore(self, step: int, **items):
    path = self.directory / str(step)
    for name, arg in items.items():
      if isinstance(arg, ocp.args.StandardRestore) and arg.item is not None:
        self._check_shapes(step, name, arg.item)
    try:
      return self._manager.restore(int(step), args=ocp.args.Composite(**items))
    except Exception as e:
      raise CheckpointError(f"checkpoint {path} cannot be restored: {type(e).__name__}: {e}") from e

  def restore(self, step: int, abstract_state):
    """(state, meta) of `step`, onto the shardings in `abstract_state`."""
    out = self._restore(
      step, state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    )
    return out["state"], dict(out["meta"] or {})

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest checkpoint, or None when there is none."""
    step = self.latest_step()
    if step is None:
      return None
    state, meta = self.restore(step, abstract_state)
    return step, state, meta

  def restore_params(self, step: int, abstract_params=None):
    """The `params` item of `step`: onto `abstract_params`'s shardings, or, without it, as saved
    (NumPy arrays on the host: the structure is the saving model's)."""
    if abstract_params is None:
      try:
        meta = self._manager.item_metadata(int(step))["params"]
      except Exception as e:
        raise CheckpointError(
          f"checkpoint {self.directory / str(step)} has no readable 'params' item "
          f"({type(e).__name__}: {e}); it was written before handflow saved one: retrain"
        ) from e
      meta = getattr(meta, "tree", meta)
      # The saving run's shardings may not exist here: one local device, then the host.
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), meta
      )
      out = self._restore(step, params=ocp.args.StandardRestore(abstract))["params"]
      return jax.tree.map(np.asarray, out)
    return self._restore(step, params=ocp.args.StandardRestore(abstract_params))["params"]

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
