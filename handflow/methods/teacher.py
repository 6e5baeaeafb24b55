"""What the pseudo-labels (the teacher every self-supervised method learns from) reach, and the
2D errors every method reports. Pure jnp over pipeline batches (`images [b, t, v, ...]`).

- `joints(batch)`: the pseudo-labels robustly triangulated across the views with their
  confidences (`geometry.triangulation.triangulate_robust`): [b, t, 21, 3] world. Needs >= 2
  views.
- `uv_error_px(uv, batch)`: mean 2D error [b, t] of uv [b, t, v, 21, 2] (crop pixels) against
  the ground truth `uv`.
- `uv_error_teacher_px(batch)`: the same for the pseudo-labels over their detections (a missing
  detection has no position, so it is left out, not counted as an error).
"""

from __future__ import annotations

import jax.numpy as jnp

from handflow.geometry import cameras, triangulation


def joints_and_valid(batch):
  """(joints [b, t, 21, 3], valid [b, t, 21]: at least two views detected the joint)."""
  P = cameras.projection_matrix(batch["K"], batch["T_cam_world"])
  uv = jnp.moveaxis(batch["uv_pl"], 2, -2)  # [b, t, 21, v, 2]
  conf = jnp.moveaxis(batch["conf"], 2, -1)
  x, valid, _ = triangulation.triangulate_robust(P[:, :, None], uv, conf)
  return x, valid


def joints(batch):
  return joints_and_valid(batch)[0]


def uv_error_px(uv, batch):
  return jnp.mean(jnp.linalg.norm(uv - batch["uv"], axis=-1), axis=(2, 3))


def uv_error_teacher_px(batch):
  det = (batch["conf"] > 0).astype(batch["uv"].dtype)
  err = jnp.linalg.norm(batch["uv_pl"] - batch["uv"], axis=-1) * det
  return jnp.sum(err, (2, 3)) / jnp.maximum(jnp.sum(det, (2, 3)), 1.0)
