"""Parameters of one run put into another, perhaps different, model (fine-tuning).

  params, report = load_pretrained(config, method, params)   # config.init_from -> params
  params, report = load(params, restored, cfg)                # a restored tree -> params

`params` is the new model's initial tree, `restored` a tree read from another run's checkpoint
(`handflow.checkpoint.Checkpointer.restore_params`: no target structure needed, so the models may
differ). Leaves are matched by path ("stage1/backbone/conv_init/kernel"): a target path is
first rewritten by `cfg.rename` (a list of (regex, replacement) pairs, applied in order, as
`re.sub` on the whole path) into the path to read, then
- a path matching one of `cfg.dont_load` (regexes, `re.fullmatch` on the target path) is left
  at its initial value ("skipped");
- a path the checkpoint has is loaded ("loaded"); its shape must equal the target's, else
  `FinetuneError` names both paths and shapes (a model that must adapt a parameter on load, like
  a ViT's position embeddings, overrides `Method.load_pretrained` and resamples first);
- a path the checkpoint lacks keeps its initial value ("fresh": a new head).
`report.line()` says all of it in one line; `report.loaded` etc. hold the paths (tests use them).

Path names join dict keys with "/", the form `handflow.optim` groups and `paths` use too.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np
from etils import epath

from handflow import checkpoint


class FinetuneError(ValueError):
  """A pre-trained tree that does not fit the model it is loaded into."""


def path_name(path) -> str:
  """A jax key path -> "a/b/c"."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def paths(tree):
  """The tree with each leaf replaced by its path name."""
  return jax.tree_util.tree_map_with_path(lambda p, _: path_name(p), tree)


def flatten(tree) -> dict:
  """{path name: leaf}."""
  return {path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@dataclasses.dataclass
class LoadReport:
  source: str = ""
  loaded: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  fresh: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)

  def line(self, show: int = 4) -> str:
    def some(names):
      more = f", +{len(names) - show} more" if len(names) > show else ""
      return f" ({', '.join(names[:show])}{more})" if names else ""

    return (
      f"init_from {self.source}: loaded {len(self.loaded)} parameter arrays; "
      f"skipped {len(self.skipped)} (dont_load){some(self.skipped)}; "
      f"fresh {len(self.fresh)} (not in the checkpoint){some(self.fresh)}; "
      f"{len(self.unused)} checkpoint arrays unused{some(self.unused)}"
    )


def _patterns(cfg, key):
  value = cfg.get(key, ()) if cfg is not None else ()
  return list(value or ())


def load(params, restored, cfg=None, source: str = "") -> tuple[object, LoadReport]:
  """`params` with every matching leaf of `restored` put in (see the module docstring)."""
  src = flatten(restored)
  dont = [re.compile(p) for p in _patterns(cfg, "dont_load")]
  renames = [(re.compile(a), b) for a, b in _patterns(cfg, "rename")]
  report = LoadReport(source=source)
  used = set()

  def one(path, init):
    name = path_name(path)
    if any(p.fullmatch(name) for p in dont):
      report.skipped.append(name)
      return init
    read = name
    for pattern, repl in renames:
      read = pattern.sub(repl, read)
    if read not in src:
      report.fresh.append(name)
      return init
    value = src[read]
    if tuple(np.shape(value)) != tuple(np.shape(init)):
      via = f" (read from '{read}')" if read != name else ""
      raise FinetuneError(
        f"init_from {source}: parameter '{name}'{via} has shape {tuple(np.shape(value))} in the "
        f"checkpoint but {tuple(np.shape(init))} in this model; add it to "
        "config.init_from.dont_load or rename it"
      )
    used.add(read)
    report.loaded.append(name)
    return np.asarray(value, dtype=init.dtype)

  out = jax.tree_util.tree_map_with_path(one, params)
  report.unused = sorted(set(src) - used)
  return out, report


def init_from_config(config) -> dict:
  """config.init_from as a dict: a bare string is the workdir."""
  raw = config.get("init_from", "") or ""
  if isinstance(raw, str):
    return {"workdir": raw} if raw else {}
  cfg = dict(raw)
  return cfg if cfg.get("workdir") else {}


def checkpoint_dir(path) -> epath.Path:
  """A run's workdir or its checkpoint directory -> the checkpoint directory."""
  path = epath.Path(path)
  return path / "checkpoints" if (path / "checkpoints").exists() else path


def load_pretrained(config, method, params):
  """(params with config.init_from's tree put in, report): the run's checkpoint (its newest step,
  or `init_from.step`) read without a target, `init_from.tree` picked out of it, then
  `method.load_pretrained` (by default `load`)."""
  cfg = init_from_config(config)
  other = checkpoint.Checkpointer(checkpoint_dir(cfg["workdir"]))
  step = int(cfg.get("step", -1))
  step = other.latest_step() if step < 0 else step
  if step is None or step not in other.all_steps():
    which = "" if step is None else f" {step}"
    raise checkpoint.CheckpointError(
      f"config.init_from = {cfg['workdir']}: no checkpoint{which} there"
    )
  tree = other.restore_params(step)
  for key in str(cfg.get("tree", "params")).split("/"):
    if not isinstance(tree, dict) or key not in tree:
      raise checkpoint.CheckpointError(
        f"config.init_from.tree = '{cfg.get('tree')}': checkpoint {other.directory / str(step)} "
        f"has no '{key}' (it has {sorted(tree) if isinstance(tree, dict) else type(tree)})"
      )
    tree = tree[key]
  host = jax.device_get(params)
  new, report = method.load_pretrained(host, tree, cfg)
  report.source = f"{other.directory / str(step)}:{cfg.get('tree', 'params')}"
  return new, report
