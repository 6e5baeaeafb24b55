"""Optimisers from config: AdamW or SGD with warm-up + cosine decay, clipping, parameter groups.

  tx = make_optimizer(config.optim, num_steps, params, labels)

`params` (concrete or abstract) and `labels` (the method's `param_labels(params)`, a string per
leaf) are what parameter groups select from. A leaf is named by its path ("stage1/backbone/
conv_init/kernel", `finetune.path_name`); a group pattern selects a leaf when it fully matches
(`re.fullmatch`) its path or its label.

config.optim keys:
- name ("adamw" | "sgd"), learning_rate, schedule ("cosine" | "constant"), warmup_steps,
  end_factor (final / peak learning rate, cosine only), grad_clip (global norm over the trained
  leaves, 0 = off), b1, b2, eps, momentum (sgd);
- weight_decay, and `no_decay` (patterns): decoupled weight decay applies to leaves with
  ndim >= 2 that match no `no_decay` pattern (biases and norm scales never decay);
- `lr_mults`: [(pattern, multiplier), ...], the first matching pattern wins; the multiplier
  scales the leaf's whole update (weight decay included), so 0.1 moves it ten times less;
- `frozen`: patterns of leaves that never move. They carry no optimiser state (optax
  `multi_transform` with `set_to_zero`) and do not count towards the clipping norm;
- `layer_decay` {rate, num_layers, layer (a regex with one group: the block index), embed (a
  regex)}: layer-wise learning-rate decay (BEiT): block i is scaled by rate^(num_layers - i),
  embedding leaves by rate^(num_layers + 1), the rest (heads) by 1; rate 1 or absent = off;
  num_layers 0 = one more than the highest block index in the tree (the model's depth).
  It multiplies with `lr_mults`;
- ema_decay (0 = no EMA; the train state then keeps no EMA copy): the loop's Polyak average of
  the parameters, evaluated and exported instead of the raw parameters. A method whose
  objective needs a teacher keeps it in its own `extra` state with its own schedule.

With no groups, the optimiser is exactly optax.adamw / optax.sgd (same numerics).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from handflow import finetune


class OptimConfigError(ValueError):
  """An optimiser config key with a value handflow cannot use."""


def schedule(cfg, num_steps: int) -> optax.Schedule:
  lr = float(cfg.learning_rate)
  kind = cfg.get("schedule", "cosine")
  warmup = int(cfg.get("warmup_steps", 0))
  if kind == "constant":
    return optax.schedules.warmup_constant_schedule(0.0, lr, max(warmup, 1)) if warmup else lr
  if kind == "cosine":
    if warmup >= num_steps:
      raise OptimConfigError(f"optim.warmup_steps = {warmup} must be < num_steps = {num_steps}")
    return optax.schedules.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=num_steps,
      end_value=lr * float(cfg.get("end_factor", 0.0)),
    )
  raise OptimConfigError(f"optim.schedule = '{kind}': expected 'cosine' or 'constant'")


def _compile(patterns, key):
  out = []
  for p in patterns or ():
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise OptimConfigError(f"optim.{key}: '{p}' is not a regular expression ({e})") from e
  return out


def _matches(pattern, name, label) -> bool:
  return bool(pattern.fullmatch(name) or (label is not None and pattern.fullmatch(str(label))))


def leaf_groups(cfg, params, labels=None):
  """Per leaf: (name, multiplier, frozen, decays), as trees with the structure of `params`."""
  names = finetune.paths(params)
  labels = jax.tree.map(lambda _: None, params) if labels is None else labels
  mults = []
  for raw, m in cfg.get("lr_mults", ()) or ():
    if float(m) < 0:
      raise OptimConfigError(f"optim.lr_mults: multiplier {m} for '{raw}' must be >= 0")
    mults.append((_compile([raw], "lr_mults")[0], float(m)))
  frozen = _compile(cfg.get("frozen", ()), "frozen")
  no_decay = _compile(cfg.get("no_decay", ()), "no_decay")
  ld = cfg.get("layer_decay", None) or {}
  rate = float(ld.get("rate", 1.0)) if ld else 1.0
  layer_re = re.compile(ld.get("layer", r"$^")) if rate != 1.0 else None
  embed_re = re.compile(ld.get("embed", r"$^")) if rate != 1.0 else None
  n_layers = int(ld.get("num_layers", 0)) if ld else 0
  if layer_re is not None and n_layers <= 0:  # 0: the model's own depth
    hits = [layer_re.search(n) for n in jax.tree.leaves(names)]
    n_layers = 1 + max((int(h.group(1)) for h in hits if h), default=-1)

  def mult(name, label):
    m = next((v for p, v in mults if _matches(p, name, label)), 1.0)
    if layer_re is not None:
      hit = layer_re.search(name)
      if hit:
        m *= rate ** (n_layers - int(hit.group(1)))
      elif embed_re.search(name):
        m *= rate ** (n_layers + 1)
    return m

  mult_tree = jax.tree.map(mult, names, labels)
  frozen_tree = jax.tree.map(
    lambda n, lab, m: m == 0.0 or any(_matches(p, n, lab) for p in frozen), names, labels, mult_tree
  )
  decay_tree = jax.tree.map(
    lambda x, n: jnp.ndim(x) >= 2 and not any(p.search(n) for p in no_decay), params, names
  )
  return names, mult_tree, frozen_tree, decay_tree


def describe(cfg, params, labels=None) -> str:
  """One line: how many leaves each group holds ("" when there are no groups)."""
  _, mults, frozen, _ = leaf_groups(cfg, params, labels)
  m, f = jax.tree.leaves(mults), jax.tree.leaves(frozen)
  n_frozen = sum(f)
  scaled = sum(1 for x, fr in zip(m, f, strict=True) if not fr and x != 1.0)
  if not n_frozen and not scaled:
    return ""
  return (
    f"optimiser groups: {n_frozen} of {len(f)} parameter arrays frozen, {scaled} with a "
    f"learning-rate multiplier (min {min(m):.3g}, max {max(m):.3g})"
  )


def _scale_by_tree(mults) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    masked = lambda x: isinstance(x, optax.MaskedNode)  # a frozen leaf inside multi_transform
    scaled = jax.tree.map(lambda u, m: u if masked(u) else u * m, updates, mults, is_leaf=masked)
    return scaled, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(cfg, num_steps: int, params=None, labels=None) -> optax.GradientTransformation:
  sched = schedule(cfg, num_steps)
  name = cfg.get("name", "adamw")
  if params is None:  # no tree to group: optax resolves the decay mask on the parameters
    if (
      cfg.get("lr_mults", ())
      or cfg.get("frozen", ())
      or (cfg.get("layer_decay", None) or {}).get("rate", 1.0) != 1.0
    ):
      raise OptimConfigError(
        "optim.lr_mults / frozen / layer_decay need the parameter tree: pass params"
      )
    decay = lambda p: leaf_groups(cfg, p)[3]
    mults = frozen = None
  else:
    _, mults, frozen, decay = leaf_groups(cfg, params, labels)
  if name == "adamw":
    opt = optax.adamw(
      sched,
      b1=float(cfg.get("b1", 0.9)),
      b2=float(cfg.get("b2", 0.999)),
      eps=float(cfg.get("eps", 1e-8)),
      weight_decay=float(cfg.weight_decay),
      mask=decay,
    )
  elif name == "sgd":
    opt = optax.sgd(sched, momentum=float(cfg.get("momentum", 0.9)) or None)
  else:
    raise OptimConfigError(f"optim.name = '{name}': expected 'adamw' or 'sgd'")
  parts = []
  clip = float(cfg.get("grad_clip", 0.0))
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(opt)
  if mults is not None and any(m != 1.0 for m in jax.tree.leaves(mults)):
    parts.append(_scale_by_tree(mults))
  tx = optax.chain(*parts) if len(parts) > 1 else opt
  if frozen is not None and any(jax.tree.leaves(frozen)):
    if all(jax.tree.leaves(frozen)):
      raise OptimConfigError("optim.frozen / lr_mults freeze every parameter: nothing would train")
    labels_tf = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels_tf)
  return tx


def ema_update(ema, params, decay):
  """Exponential moving average of parameters: decay * ema + (1 - decay) * params (`decay` may
  be a traced scalar: a momentum schedule)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
