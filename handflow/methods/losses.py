"""Loss pieces shared by the methods."""

from __future__ import annotations

import jax.numpy as jnp


def smooth_l1(d, delta: float = 0.02):
  """Huber-style robust penalty of a residual vector d [..., k] (crop units) -> [...].

  Quadratic below `delta` (2.5 px of a 128 px crop), linear above: a wrong pseudo-label pulls
  with a bounded force.
  """
  a = jnp.abs(d)
  return jnp.sum(jnp.where(a < delta, 0.5 * a**2 / delta, a - 0.5 * delta), axis=-1)


def weighted_mean(x, w):
  """sum(w x) / sum(w), 0 when all weights are 0; w broadcasts against x. Entries of weight 0
  (padding, missing labels) may hold NaN or inf: they are kept out of the sum and its gradient."""
  w = jnp.broadcast_to(w, x.shape).astype(x.dtype)
  x = jnp.where(w > 0, x, 0.0)
  return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1e-6)
