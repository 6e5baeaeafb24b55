"""CycleHand's loss pieces, pure and per sample (the method weights, masks and sums them).

- `random_rotations(key, n, max_angle, min_angle=0)`: rotations about uniformly random axes by
  angles uniform in [min_angle, max_angle] (radians) -> [n, 3, 3].
- `joint_l1_cm(a, b)`: mean L1 distance of root-relative keypoints [..., 21, 3] in cm.
- `rotation_l2(Ra, Rb)`: squared Frobenius distance of rotations [..., 3, 3] (0 when equal).
- `masked_l1(x, y, m)`: per-sample mean |x - y| over pixels where m [n, h, w] is set.
- `soft_iou_loss(s, m)`: 1 - soft IoU of a silhouette and a mask, per sample.
- `nt_xent(z1, z2, valid, temperature)`: SimCLR's normalised-temperature cross-entropy of the
  pairs (z1[i], z2[i]) against every other valid sample of both views, per anchor [2n].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from handflow.hand import rotations

CM = 0.01


def random_rotations(key, n: int, max_angle, min_angle=0.0):
  k1, k2 = jax.random.split(key)
  axis = jax.random.normal(k1, (n, 3))
  axis = axis / jnp.maximum(jnp.linalg.norm(axis, axis=-1, keepdims=True), 1e-9)
  angle = jax.random.uniform(k2, (n, 1), minval=min_angle, maxval=max_angle)
  return rotations.axis_angle_to_matrix(axis * angle)


def root_relative(x, root: int = 0):
  return x - x[..., root : root + 1, :]


def joint_l1_cm(a, b):
  """Mean over keypoints of the L1 distance between root-relative keypoints, in cm -> [...]."""
  return jnp.mean(jnp.sum(jnp.abs(root_relative(a) - root_relative(b)), -1), -1) / CM


def rotation_l2(Ra, Rb):
  return jnp.sum((Ra - Rb) ** 2, (-1, -2))


def masked_l1(x, y, m):
  """x, y [n, h, w, c], m [n, h, w] -> [n]: mean absolute difference over the masked pixels
  (0 where a sample has none)."""
  d = jnp.mean(jnp.abs(x - y), -1) * m
  return jnp.sum(d, (-1, -2)) / jnp.maximum(jnp.sum(m, (-1, -2)), 1.0)


def soft_iou_loss(s, m):
  """1 - sum(s m) / sum(s + m - s m) per sample [n] for s, m [n, h, w] in [0, 1]."""
  inter = jnp.sum(s * m, (-1, -2))
  union = jnp.sum(s + m - s * m, (-1, -2))
  return 1.0 - inter / jnp.maximum(union, 1e-6)


def nt_xent(z1, z2, valid, temperature: float):
  """z1, z2 [n, d] unit vectors (two views of n samples), valid [n] -> losses [2n] (0 for
  invalid anchors): -log softmax over the other 2n - 1 samples (invalid ones excluded) at the
  anchor's partner."""
  n = z1.shape[0]
  z = jnp.concatenate([z1, z2], 0)
  ok = jnp.concatenate([valid, valid], 0) > 0
  sim = (z @ z.T) / temperature
  eye = jnp.eye(2 * n, dtype=bool)
  sim = jnp.where(eye | ~ok[None, :], -jnp.inf, sim)
  partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  logp = jax.nn.log_softmax(sim, axis=-1)
  loss = -jnp.take_along_axis(logp, partner[:, None], -1)[:, 0]
  return jnp.where(ok, loss, 0.0)
