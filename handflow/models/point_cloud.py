"""From 2D hypotheses to UST-Hand's probabilistic 3D point cloud (pure functions).

Shapes: b clips, t frames, v views, j = 21 joints, k hypotheses per joint per view (the flow's
samples), m view-pair points; per joint s = 1 + m + k points, in this order (`kinds`):
- the **mode**: the stage-1 modes of every view triangulated robustly (best view pair, then
  Cauchy-reweighted DLT: `geometry.triangulation.triangulate_robust`), so that a view whose
  mode is wrong does not drag it;
- **view-pair points**: the m view pairs whose triangulated modes have the smallest robust cost
  over all views: when the views disagree (a finger swap seen by a cone of cameras), the cloud
  holds each consistent subset's answer, not only their average;
- **samples**: hypothesis i of every view triangulated with the mode's robust view weights.
Cameras are `P [b, t, v, 3, 4]` (crop K [R | t], world -> crop pixels).

Every point is then scored by its multi-view likelihood (`methods.ust`): the mean over views of
log p_v(pi_v(X)) relative to the view's mode, each view's term clipped at `-SCORE_CLIP` nats so
that one wrong view costs a bounded amount. A point's features: its position in the hand's
canonical frame (root-relative, rotated by the palm's orientation, scale-normalised by
`NORM_M`), its kind, whether it is valid, its score, its mean reprojection distance from the
views' modes, its joint's spread, and the image features sampled at its projections (mean over
views, weighted by the robust view weights).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from handflow.geometry import alignment, triangulation

NORM_M = 0.2  # metres per canonical unit (HaMuCo normalises 3D by 0.2 m)
ROOT = 9  # middle-finger MCP (OpenPose order), the prior method's root
PALM = (0, 1, 5, 9, 13, 17)  # keypoints that fix the hand's orientation and size
GEOM_FEATURES = 10  # canonical xyz, kind (3), valid, score, error, spread
SCORE_CLIP = 8.0  # nats: the most one view can subtract from a point's score
ROBUST_SCALE = 0.05  # Cauchy scale of the robust triangulation, in crop units


def kinds(m: int, k: int) -> np.ndarray:
  """Point kinds [1 + m + k]: 0 the mode, 1 view-pair points, 2 samples."""
  return np.asarray([0] + [1] * m + [2] * k, np.int32)


def build(P, hyp_px, w, *, pairs: int, size: int):
  """P [b, t, v, 3, 4], hyp_px [b, t, v, j, 1 + k, 2] (mode first, crop px), w [b, t, v, j]
  view weights -> X [b, t, j, s, 3] world, valid [b, t, j, s], view weights after the robust
  fit [b, t, j, v], reprojection distance of each point from the views' modes [b, t, j, s, v] px.
  """
  mode_uv = jnp.moveaxis(hyp_px[..., 0, :], 2, -2)  # [b, t, j, v, 2]
  w_ = jnp.moveaxis(w, 2, -1)  # [b, t, j, v]
  P_ = P[:, :, None]  # [b, t, 1, v, 3, 4]
  scale = ROBUST_SCALE * size
  nv = mode_uv.shape[-2]
  found = triangulation.pair_points(P_, mode_uv, w_, scale_px=scale) if nv >= 2 else None
  x0, v0, view_w = triangulation.triangulate_robust(P_, mode_uv, w_, scale_px=scale, pairs=found)
  xs, vs = [x0[..., None, :]], [v0[..., None]]
  m = min(pairs, nv * (nv - 1) // 2)
  if m:
    xp, vp, cost = found
    _, best = jax.lax.top_k(-cost, m)  # the m most consistent pairs
    xs.append(jnp.take_along_axis(xp, best[..., None], axis=-2))
    vs.append(jnp.take_along_axis(vp, best, axis=-1))
  k = hyp_px.shape[-2] - 1
  if k:
    uv = jnp.moveaxis(hyp_px[..., 1:, :], 2, -2)  # [b, t, j, k, v, 2]
    wk = jnp.broadcast_to(view_w[..., None, :], uv.shape[:-1])
    x, valid = triangulation.triangulate(P_[:, :, :, None], uv, wk)
    xs.append(x)
    vs.append(valid)
  x, valid = jnp.concatenate(xs, -2), jnp.concatenate(vs, -1)
  err = triangulation.reprojection_error(P_[:, :, :, None], x, mode_uv[..., None, :, :])
  return x, valid, view_w, err


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


def features(x, valid, kind, err_px, score, frame, fmap_points, w, size):
  """Per-point features.

  x [b, t, j, s, 3] world, valid [b, t, j, s], kind [s] (`kinds`), err_px [b, t, j, s, v],
  score [b, t, j, s] (nats, in [-SCORE_CLIP, 0]), frame = canonical_frame(...), fmap_points
  [b, t, v, j, s, c] image features at the projections, w [b, t, j, v] view weights, size:
  crop side in px. Returns geometric features [b, t, j, s, GEOM_FEATURES] and image features
  [b, t, j, s, c].
  """
  xc = to_canonical(x, *frame)
  vf = valid.astype(x.dtype)
  spread_c, _ = spread(xc, valid)
  err = jnp.mean(jnp.minimum(err_px / size, 1.0), -1)
  onehot = jnp.broadcast_to(jax.nn.one_hot(kind, 3, dtype=x.dtype), valid.shape + (3,))
  geom = jnp.concatenate(
    [
      jnp.where(valid[..., None], jnp.clip(xc, -5.0, 5.0), 0.0),
      onehot,
      vf[..., None],
      (score / SCORE_CLIP)[..., None],
      10.0 * err[..., None],
      jnp.broadcast_to(10.0 * spread_c[..., None], valid.shape)[..., None],
    ],
    axis=-1,
  )
  wn = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-9)
  img = jnp.einsum("btjv,btvjsc->btjsc", wn, fmap_points)
  return geom, img


def spread(x, valid, weights=None, centre=None):
  """x [..., s, 3], valid [..., s] -> (RMS distance of the valid points from `centre` [..., 3]
  (default: their mean) [...], the centre). `weights [..., s]` (summing to 1 over the valid
  points) weight both."""
  vf = valid.astype(x.dtype)
  w = vf if weights is None else weights * vf
  w = (w / jnp.maximum(jnp.sum(w, -1, keepdims=True), 1e-12))[..., None]
  if centre is None:
    centre = jnp.sum(x * w, -2)
  sq = jnp.sum((x - centre[..., None, :]) ** 2, -1, keepdims=True)
  return jnp.sqrt(jnp.sum(sq * w, -2) + 1e-12)[..., 0], centre


def fuse(x, valid, logits):
  """The cloud's answer per joint: points x [..., s, 3] averaged with softmax(logits [..., s])
  over the valid ones -> (fused [..., 3], weights [..., s])."""
  logits = jnp.where(valid, logits, -1e9)
  weights = jax.nn.softmax(logits, axis=-1) * valid
  weights = weights / jnp.maximum(jnp.sum(weights, -1, keepdims=True), 1e-12)
  return jnp.einsum("...s,...sc->...c", weights, x), weights
