"""Optimisers from config: AdamW with warm-up + cosine decay, clipping, weight-decay masks, EMA.

  tx = make_optimizer(config.optim, num_steps)

config.optim keys: name ("adamw" | "sgd"), learning_rate, weight_decay, schedule ("cosine" |
"constant"), warmup_steps, end_factor (final / peak learning rate, cosine only), grad_clip
(global-norm clipping, 0 = off), b1, b2, eps, momentum (sgd), ema_decay (0 = no EMA; the train
state then keeps no EMA copy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


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


def decay_mask(params):
  """Weight decay on matrices and kernels (ndim >= 2), not on biases and norm scales."""
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  sched = schedule(cfg, num_steps)
  name = cfg.get("name", "adamw")
  if name == "adamw":
    opt = optax.adamw(
      sched,
      b1=float(cfg.get("b1", 0.9)),
      b2=float(cfg.get("b2", 0.999)),
      eps=float(cfg.get("eps", 1e-8)),
      weight_decay=float(cfg.weight_decay),
      mask=decay_mask,
    )
  elif name == "sgd":
    opt = optax.sgd(sched, momentum=float(cfg.get("momentum", 0.9)) or None)
  else:
    raise OptimConfigError(f"optim.name = '{name}': expected 'adamw' or 'sgd'")
  clip = float(cfg.get("grad_clip", 0.0))
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt


def ema_update(ema, params, decay: float):
  """Exponential moving average of parameters: decay * ema + (1 - decay) * params."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
