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
  the 20 bones (a hand's bones do not change length within a clip);
- `penetration(xyz [..., 21, 3]) -> [...]`: how deep non-adjacent finger segments (sphere-chain
  capsules) overlap, metres (CycleHand's mechanical constraint).
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


# Finger segments (OpenPose keypoints, MCP -> PIP -> DIP -> tip; thumb CMC -> MCP -> IP -> tip),
# finger by finger, and the radius of each finger's proxy (metres).
SEGMENTS = tuple((4 * f + k + 1, 4 * f + k + 2) for f in range(5) for k in range(3))
FINGER_RADII_M = (0.0095, 0.0085, 0.0085, 0.008, 0.0075)  # thumb, index, middle, ring, pinky
SPHERES_PER_SEGMENT = 6


def _collision_pairs():
  """Segment pairs that must not overlap: different fingers, or the same finger two or more
  segments apart (adjacent segments share a joint and always touch)."""
  pairs = []
  for i in range(len(SEGMENTS)):
    for j in range(i + 1, len(SEGMENTS)):
      if i // 3 != j // 3 or j - i >= 2:
        pairs.append((i, j))
  return np.asarray(pairs)


COLLISION_PAIRS = _collision_pairs()


def penetration(xyz, tolerance: float = 0.8):
  """Interpenetration of the fingers, metres >= 0 per sample [...], of keypoints xyz [..., 21, 3]
  (OpenPose order).

  Each finger segment is a chain of `SPHERES_PER_SEGMENT` spheres of its finger's radius (a
  capsule proxy); for every pair in `COLLISION_PAIRS`, the depth by which the closest spheres
  overlap beyond `tolerance` x the sum of the radii (soft tissue gives a little: fingers pressed
  together are not a violation) is summed. 0 for the open hand at rest and any spread pose.
  """
  t = jnp.linspace(0.0, 1.0, SPHERES_PER_SEGMENT)
  seg = np.asarray(SEGMENTS)
  a, b = xyz[..., seg[:, 0], :], xyz[..., seg[:, 1], :]  # [..., 15, 3]
  centres = a[..., None, :] + t[:, None] * (b - a)[..., None, :]  # [..., 15, m, 3]
  radius = np.repeat(np.asarray(FINGER_RADII_M), 3)  # per segment
  i, j = COLLISION_PAIRS[:, 0], COLLISION_PAIRS[:, 1]
  d = centres[..., i, :, None, :] - centres[..., j, None, :, :]  # [..., p, m, m, 3]
  dist = jnp.sqrt(jnp.sum(d * d, -1) + 1e-12)
  overlap = jnp.maximum(tolerance * (radius[i] + radius[j])[:, None, None] - dist, 0.0)
  return jnp.sum(jnp.max(overlap, axis=(-1, -2)), -1)
