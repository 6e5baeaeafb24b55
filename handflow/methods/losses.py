"""Loss pieces shared by the methods: robust penalties, masked means, heatmap targets."""

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


def heatmap_cross_entropy(log_heatmap, u, std_cells: float = 1.0):
  """Cross-entropy of heatmaps log_heatmap [n, h, w, j] (log-probabilities over positions)
  against Gaussians (std in feature cells) at positions u [..., j, 2] (crop units; the leading
  dims flatten to n) -> [..., j]. A dense signal for every cell, so a 2D network finds the
  joints long before a density's gradient (scaled by 1 / sigma^2) takes over."""
  n, h, w, j = log_heatmap.shape
  gx = (jnp.arange(w) + 0.5) / w
  gy = (jnp.arange(h) + 0.5) / h
  uf = u.reshape(n, j, 2)
  dx = (gx[None, None, :] - uf[..., 0:1]) * w / std_cells  # [n, j, w]
  dy = (gy[None, None, :] - uf[..., 1:2]) * h / std_cells  # [n, j, h]
  target = jnp.exp(-0.5 * dy[..., :, None] ** 2) * jnp.exp(-0.5 * dx[..., None, :] ** 2)
  target = target / jnp.maximum(jnp.sum(target, (-1, -2), keepdims=True), 1e-12)
  ce = -jnp.einsum("njyx,nyxj->nj", target, log_heatmap)
  return ce.reshape(u.shape[:-1])
