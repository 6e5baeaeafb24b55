"""Reading joint heatmaps: positions and features (UST-Hand's per-view net, CycleHand's 2D head).

  log_prob, mu, pooled = read(logits[n, h, w, j], fmap[n, h, w, c])

- log_prob [n, h, w, j]: log-probabilities over the map's positions (a softmax per joint);
- mu [n, j, 2]: the soft-argmax, in crop units [0, 1] (cell centres at (i + 0.5) / w);
- pooled [n, j, c]: the heatmap-weighted feature of each joint.
The soft-argmax is differentiable and sub-cell accurate, so a regressor that reads mu learns
from a dense 2D signal (`losses.heatmap_cross_entropy`) long before a global one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_KEYPOINTS = 21  # OpenPose order (`hand.conventions`): one heatmap each


def grid(h: int, w: int, dtype=jnp.float32):
  """Cell centres [h w, 2] (x, y) in crop units, row-major like a flattened [h, w] map."""
  gx = (jnp.arange(w) + 0.5) / w
  gy = (jnp.arange(h) + 0.5) / h
  return jnp.stack(jnp.meshgrid(gx, gy), -1).reshape(h * w, 2).astype(dtype)


def log_probs(logits):
  """logits [n, h, w, j] -> log-probabilities over each joint's positions (a softmax per
  joint), same shape."""
  n, hh, ww, j = logits.shape
  return jax.nn.log_softmax(logits.reshape(n, hh * ww, j), axis=1).reshape(n, hh, ww, j)


def soft_argmax(log_prob):
  """log_prob [n, h, w, j] -> the expected position mu [n, j, 2] in crop units."""
  n, hh, ww, j = log_prob.shape
  prob = jnp.exp(log_prob.reshape(n, hh * ww, j))
  return jnp.einsum("npj,pd->njd", prob, grid(hh, ww, log_prob.dtype))


def read(logits, fmap):
  """logits [n, h, w, j], fmap [n, h, w, c] -> (log_prob [n, h, w, j], mu [n, j, 2],
  pooled [n, j, c])."""
  n, hh, ww, j = logits.shape
  log_prob = log_probs(logits)
  prob = jnp.exp(log_prob.reshape(n, hh * ww, j))
  pooled = jnp.einsum("npj,npc->njc", prob, fmap.reshape(n, hh * ww, -1))
  return log_prob, soft_argmax(log_prob), pooled
