"""Sampling feature maps at continuous image positions (pure jnp).

`bilinear_sample(fmap, uv)` is the operation behind UST-Hand's image features at each 3D point's
projections and PyMAF's mesh-aligned features (features read at projected mesh vertices): one
implementation for every method. Positions are in [0, 1] image units (0 and 1 are the outer
edges of the first and last pixel); a point outside the map reads 0, and the bilinear weights
give gradients with respect to both the map and the positions.
"""

from __future__ import annotations

import jax.numpy as jnp


def bilinear_sample(fmap, uv):
  """fmap [n, h, w, c], uv [n, p, 2] in [0, 1] image units -> [n, p, c] (0 outside)."""
  n, h, w, c = fmap.shape
  x = uv[..., 0] * w - 0.5
  y = uv[..., 1] * h - 0.5
  inside = (x > -1) & (x < w) & (y > -1) & (y < h)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  flat = fmap.reshape(n, h * w, c)

  def tap(xi, yi, wt):
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
    vals = jnp.take_along_axis(flat, idx[..., None], axis=1)
    return vals * (wt * ok)[..., None]

  out = (
    tap(x0, y0, (1 - fx) * (1 - fy))
    + tap(x0 + 1, y0, fx * (1 - fy))
    + tap(x0, y0 + 1, (1 - fx) * fy)
    + tap(x0 + 1, y0 + 1, fx * fy)
  )
  return out * inside[..., None]
