"""Rotation representations: axis-angle, matrix, 6D and quaternion.

All functions are batched over any leading shape, jit/vmap/grad-safe, and stable (finite values
and gradients) at angle 0 and near pi.

Conventions:
- axis-angle `aa[..., 3]`: direction = axis, norm = angle in radians (MANO's pose format).
- matrix `R[..., 3, 3]` acts on column vectors: x' = R @ x.
- quaternion `q[..., 4]` is (w, x, y, z), scalar first (note: scipy uses scalar last);
  functions that return quaternions give the representative with w >= 0.
- 6D `d6[..., 6]` is the first two columns of R, (R[:, 0], R[:, 1]) (Zhou et al., CVPR 2019);
  `rot6d_to_matrix` orthonormalises them by Gram-Schmidt.
"""

from __future__ import annotations

import jax.numpy as jnp

# Below this squared angle the Taylor series are exact to float32 precision.
_SMALL_ANGLE_SQ = 1e-6


def _safe_norm(x, axis=-1, keepdims=False):
  """Euclidean norm with a finite (zero) gradient at x = 0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  is_zero = sq == 0.0
  return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, sq)))


def skew(v):
  """[..., 3] -> [..., 3, 3] cross-product matrix, skew(v) @ x = v x x."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  o = jnp.zeros_like(x)
  return jnp.stack(
    [jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2
  )


def axis_angle_to_matrix(aa):
  """Rodrigues' formula: aa[..., 3] -> R[..., 3, 3]."""
  theta_sq = jnp.sum(aa * aa, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  # Double `where` so that the unused branch never sees theta = 0 (keeps gradients finite).
  safe_sq = jnp.where(small, 1.0, theta_sq)
  theta = jnp.sqrt(safe_sq)
  a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(theta)) / safe_sq)
  k = skew(aa)
  eye = jnp.eye(3, dtype=aa.dtype)
  return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def quaternion_to_matrix(q):
  """q[..., 4] (w, x, y, z), normalised here -> R[..., 3, 3]."""
  q = q / _safe_norm(q, keepdims=True)
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
    [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ]
  return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def matrix_to_quaternion(r):
  """R[..., 3, 3] -> q[..., 4] (w, x, y, z) with w >= 0.

  Computes the four algebraically equal candidates (each divides by one of 4|w|, 4|x|, 4|y|,
  4|z|) and keeps the best conditioned one: the largest of those is always >= 1, so the chosen
  division is safe at every angle, including pi, where w = 0.
  """
  r00, r01, r02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
  r10, r11, r12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
  r20, r21, r22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
  four_sq = jnp.stack(
    [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1
  )  # (4w^2, 4x^2, 4y^2, 4z^2)
  two_abs = jnp.sqrt(jnp.maximum(four_sq, 0.1))  # only the selected (>= 1) entry is used.
  candidates = jnp.stack(
    [
      jnp.stack([four_sq[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
      jnp.stack([r21 - r12, four_sq[..., 1], r10 + r01, r02 + r20], -1),
      jnp.stack([r02 - r20, r10 + r01, four_sq[..., 2], r12 + r21], -1),
      jnp.stack([r10 - r01, r20 + r02, r21 + r12, four_sq[..., 3]], -1),
    ],
    -2,
  ) / (2.0 * two_abs[..., :, None])
  best = jnp.argmax(four_sq, axis=-1)
  q = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
  q = q / _safe_norm(q, keepdims=True)
  return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q):
  """q[..., 4] (w, x, y, z) -> aa[..., 3] with angle in [0, pi]."""
  q = jnp.where(q[..., :1] < 0, -q, q)
  w, v = q[..., 0], q[..., 1:]
  sin_half = _safe_norm(v)
  half = jnp.arctan2(sin_half, w)
  small = sin_half < 1e-4
  # angle / sin(angle / 2); near 0 it tends to 2 / w (Taylor: 2 / w * (1 + sin^2 / (3 w^2))).
  safe_sin = jnp.where(small, 1.0, sin_half)
  safe_w = jnp.where(small, w, 1.0)
  scale = jnp.where(
    small, 2.0 / safe_w * (1.0 + sin_half**2 / (3.0 * safe_w**2)), 2.0 * half / safe_sin
  )
  return scale[..., None] * v


def axis_angle_to_quaternion(aa):
  """aa[..., 3] -> q[..., 4] (w, x, y, z), w >= 0 for angles in [0, pi]."""
  theta_sq = jnp.sum(aa * aa, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
  # sin(theta / 2) / theta, and its Taylor series at 0.
  s = jnp.where(small, 0.5 - theta_sq / 48.0, jnp.sin(theta / 2) / theta)
  w = jnp.where(small, 1.0 - theta_sq / 8.0, jnp.cos(theta / 2))
  return jnp.concatenate([w[..., None], s[..., None] * aa], -1)


def matrix_to_axis_angle(r):
  """R[..., 3, 3] -> aa[..., 3] (angle in [0, pi]); stable at 0 and pi via the quaternion."""
  return quaternion_to_axis_angle(matrix_to_quaternion(r))


def matrix_to_rot6d(r):
  """R[..., 3, 3] -> d6[..., 6], the first two columns."""
  return jnp.concatenate([r[..., :, 0], r[..., :, 1]], -1)


def rot6d_to_matrix(d6, eps=1e-8):
  """d6[..., 6] -> R[..., 3, 3] by Gram-Schmidt on the two 3-vectors (any non-degenerate 6D)."""
  a1, a2 = d6[..., :3], d6[..., 3:]
  b1 = a1 / jnp.maximum(_safe_norm(a1, keepdims=True), eps)
  a2 = a2 - jnp.sum(b1 * a2, -1, keepdims=True) * b1
  b2 = a2 / jnp.maximum(_safe_norm(a2, keepdims=True), eps)
  b3 = jnp.cross(b1, b2)
  return jnp.stack([b1, b2, b3], -1)


def axis_angle_to_rot6d(aa):
  return matrix_to_rot6d(axis_angle_to_matrix(aa))


def rot6d_to_axis_angle(d6):
  return matrix_to_axis_angle(rot6d_to_matrix(d6))


def geodesic_angle(r1, r2):
  """Angle in radians of R1^T R2, [..., 3, 3] x [..., 3, 3] -> [...]."""
  rel = jnp.swapaxes(r1, -1, -2) @ r2
  return _safe_norm(matrix_to_axis_angle(rel))
