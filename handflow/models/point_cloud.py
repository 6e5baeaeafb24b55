"""From 2D hypotheses to UST-Hand's probabilistic 3D point cloud (pure functions).

Shapes: b clips, t frames, v views, j = 21 joints, k hypotheses per joint per view, s = k + 1
points per joint (the mode first). Cameras are `P [b, t, v, 3, 4]` (crop K [R | t], world ->
crop pixels). Hypothesis i of a joint is triangulated from sample i of every view: samples are
independent across views, so the points sample the fused multi-view distribution.

A point's features: its position in the hand's canonical frame (root-relative, rotated by the
palm's orientation, scale-normalised by `NORM_M`), whether it is the mode, whether it is valid,
its hypotheses' mean log-likelihood, its mean reprojection error, its joint's spread, and the
image features sampled at its projections (mean over views, weighted like the triangulation).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from handflow.geometry import alignment, triangulation

NORM_M = 0.2  # metres per canonical unit (HaMuCo normalises 3D by 0.2 m)
ROOT = 9  # middle-finger MCP (OpenPose order), the prior method's root
PALM = (0, 1, 5, 9, 13, 17)  # keypoints that fix the hand's orientation and size
GEOM_FEATURES = 8  # per point: canonical xyz, is-mode, valid, log-likelihood, error, spread


def triangulate_points(P, uv, w):
  """P [b, t, v, 3, 4], uv [b, t, v, j, s, 2] px, w [b, t, v, j] -> X [b, t, j, s, 3] world,
  valid [b, t, j, s], reprojection error [b, t, j, s, v] px."""
  uv_ = jnp.moveaxis(uv, 2, -2)  # [b, t, j, s, v, 2]
  w_ = jnp.moveaxis(w, 2, -1)[:, :, :, None, :]  # [b, t, j, 1, v]
  P_ = P[:, :, None, None]
  w_ = jnp.broadcast_to(w_, uv_.shape[:-1])
  x, valid = triangulation.triangulate(P_, uv_, w_)
  err = triangulation.reprojection_error(P_, x, uv_)
  return x, valid, err


def canonical_frame(x_mode, template):
  """The similarity taking the template hand's palm onto the mode's: the hand's frame.

  x_mode [b, t, 21, 3] world, template [21, 3] (flat, mean shape) -> scale [b, t] (mode palm
  size / template palm size), R_world_hand [b, t, 3, 3], root [b, t, 3] world.
  """
  ids = np.asarray(PALM)
  tmpl = jnp.broadcast_to(jnp.asarray(template)[ids], x_mode[..., ids, :].shape)
  s, r, _ = alignment.similarity_transform(tmpl, x_mode[..., ids, :], allow_reflection=False)
  return s, r, x_mode[..., ROOT, :]


def to_canonical(x, scale, R_world_hand, root):
  """World points x [b, t, ..., 3] -> canonical units: R^T (x - root) / (scale * NORM_M)."""
  b, t = x.shape[:2]
  rel = x.reshape(b, t, -1, 3) - root[:, :, None]
  local = jnp.einsum("btji,btnj->btni", R_world_hand, rel)
  return (local / (scale[:, :, None, None] * NORM_M)).reshape(x.shape)


def from_canonical(x, scale, R_world_hand, root):
  """Canonical points x [b, t, ..., 3] -> world: root + scale * NORM_M * R x."""
  b, t = x.shape[:2]
  local = x.reshape(b, t, -1, 3) * (scale[:, :, None, None] * NORM_M)
  world = jnp.einsum("btij,btnj->btni", R_world_hand, local) + root[:, :, None]
  return world.reshape(x.shape)


def features(x, valid, err_px, log_lik, frame, fmap_points, w, size):
  """Per-point features.

  x [b, t, j, s, 3] world, valid [b, t, j, s], err_px [b, t, j, s, v], log_lik [b, t, j, s]
  (mean over views), frame = canonical_frame(...), fmap_points [b, t, v, j, s, c] image
  features at the projections, w [b, t, v, j] view weights, size: crop side in px.
  Returns geometric features [b, t, j, s, GEOM_FEATURES] and image features [b, t, j, s, c].
  """
  xc = to_canonical(x, *frame)
  vf = valid.astype(x.dtype)
  mean = jnp.sum(xc * vf[..., None], -2, keepdims=True) / jnp.maximum(
    jnp.sum(vf, -1)[..., None, None], 1.0
  )
  spread = jnp.sqrt(
    jnp.sum(jnp.sum((xc - mean) ** 2, -1) * vf, -1, keepdims=True)
    / jnp.maximum(jnp.sum(vf, -1, keepdims=True), 1.0)
  )
  s = x.shape[-2]
  is_mode = jnp.zeros((s,), x.dtype).at[0].set(1.0)
  err = jnp.mean(jnp.minimum(err_px / size, 1.0), -1)
  geom = jnp.concatenate(
    [
      jnp.where(valid[..., None], jnp.clip(xc, -5.0, 5.0), 0.0),
      jnp.broadcast_to(is_mode, valid.shape)[..., None],
      vf[..., None],
      jnp.clip(log_lik / 10.0, -3.0, 3.0)[..., None],
      10.0 * err[..., None],
      jnp.broadcast_to(10.0 * spread, valid.shape)[..., None],
    ],
    axis=-1,
  )
  wn = w / jnp.maximum(jnp.sum(w, axis=2, keepdims=True), 1e-9)
  img = jnp.einsum("btvj,btvjsc->btjsc", wn, fmap_points)
  return geom, img


def spread(x, valid):
  """x [..., s, 3], valid [..., s] -> (RMS distance of the valid points from their mean [...],
  the mean [..., 3])."""
  vf = valid.astype(x.dtype)[..., None]
  n = jnp.maximum(jnp.sum(vf, -2), 1.0)
  mean = jnp.sum(x * vf, -2) / n
  sq = jnp.sum((x - mean[..., None, :]) ** 2, -1, keepdims=True)
  return jnp.sqrt(jnp.sum(sq * vf, -2) / n)[..., 0], mean
