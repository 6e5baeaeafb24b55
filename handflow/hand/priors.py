"""Priors on a hand's shape, pose and motion: per-sample penalties (pure jnp), unreduced over
the batch so that each method weights and masks them its own way (`methods.losses.weighted_mean`).

- `shape(betas [..., nb]) -> [...]`: mean squared shape coefficient (0 = the mean hand);
- `pose(rot6d_delta [..., 15, 6]) -> [...]`: mean squared residual of the finger joints' 6D
  rotations from the flat hand (a head that outputs residuals starts at the prior's minimum);
- `limits(R_local [..., 15, 3, 3], axes) -> [...]`: mean squared excess of the finger joints'
  flexion, abduction and twist over the anatomical ranges (`hand.limits`);
- `acceleration(x [b, t, j, 3]) -> [b, t - 2]`: mean squared second difference over joints
  (temporal smoothness; units of x squared; empty when t < 3);
- `bone_variance(x [b, t, 21, 3]) -> [b]`: variance over frames of each bone's length, mean over
  the 20 bones (a hand's bones do not change length within a clip).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from handflow.hand import conventions, rotations
from handflow.hand import limits as hand_limits

BONES = tuple((p, c) for c, p in enumerate(conventions.OPENPOSE_PARENTS) if p >= 0)


def shape(betas):
  return jnp.mean(betas**2, -1)


def pose(rot6d_delta):
  return jnp.mean(rot6d_delta**2, (-1, -2))


def limits(R_local, axes):
  aa = rotations.matrix_to_axis_angle(R_local)
  return jnp.mean(hand_limits.violation(aa, axes) ** 2, (-1, -2))


def acceleration(x):
  acc = x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]
  return jnp.mean(jnp.sum(acc**2, -1), -1)


def bone_variance(x):
  parent, child = (np.array(a) for a in zip(*BONES, strict=True))
  d = x[:, :, child] - x[:, :, parent]
  length = jnp.sqrt(jnp.sum(d * d, -1) + 1e-12)  # [b, t, 20]; finite gradient at 0 (padding)
  return jnp.mean(jnp.var(length, axis=1), -1)
