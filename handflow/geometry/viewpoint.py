"""Where a camera sees a hand from: the angle between the camera ray and the palm normal.

  angle = viewpoint.palm_angle(xyz_cam[..., 21, 3], side="right")   # degrees, [...]

0 deg: the camera looks straight at the palm; 90: at the hand's edge (thumb or pinky side, or
along the fingers); 180: at the back of the hand. The palm normal is the cross product of the
wrist -> index-MCP and wrist -> pinky-MCP vectors (OpenPose order), which points out of the palm
of a right hand (the left hand mirrors it); the ray runs from the palm's centre (wrist and the
four finger MCPs) to the camera's centre. CycleHand's labelled cone (`data.labelled_views`) and
its per-viewpoint evaluation (`eval.evaluators.Viewpoint`) both use it.
"""

from __future__ import annotations

import jax.numpy as jnp

WRIST, INDEX_MCP, PINKY_MCP = 0, 5, 17
PALM = (0, 5, 9, 13, 17)
BINS_DEG = (0.0, 45.0, 90.0, 135.0, 180.0)


def palm_normal(xyz, side: str = "right"):
  """Unit normal out of the palm [..., 3] of keypoints xyz [..., 21, 3] (OpenPose order)."""
  a = xyz[..., INDEX_MCP, :] - xyz[..., WRIST, :]
  b = xyz[..., PINKY_MCP, :] - xyz[..., WRIST, :]
  n = jnp.cross(a, b) * (1.0 if side == "right" else -1.0)
  return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def palm_angle(xyz_cam, side: str = "right"):
  """Angle in degrees [...] between the palm normal and the ray from the palm's centre to the
  camera, keypoints xyz_cam [..., 21, 3] in the camera frame (camera at the origin)."""
  centre = jnp.mean(xyz_cam[..., PALM, :], axis=-2)
  to_cam = -centre / jnp.maximum(jnp.linalg.norm(centre, axis=-1, keepdims=True), 1e-12)
  cos = jnp.clip(jnp.sum(palm_normal(xyz_cam, side) * to_cam, -1), -1.0, 1.0)
  return jnp.degrees(jnp.arccos(cos))


def bin_names(bins=BINS_DEG) -> list[str]:
  return [f"{int(lo)}-{int(hi)}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]


def bin_masks(angle, bins=BINS_DEG):
  """[len(bins) - 1, ...] booleans: angle in [lo, hi) (the last bin includes its upper end)."""
  out = []
  for i, (lo, hi) in enumerate(zip(bins[:-1], bins[1:], strict=True)):
    upper = angle <= hi if i == len(bins) - 2 else angle < hi
    out.append((angle >= lo) & upper)
  return jnp.stack(out)
