"""Multi-view triangulation: weighted DLT, a robust variant, reprojection errors.

Shapes: `P [..., v, 3, 4]` projection matrices (K [R | t], see `cameras.projection_matrix`),
`uv [..., v, 2]` observations in pixels, `w [..., v]` non-negative weights (confidences); a
view with weight 0 is ignored. Add joint or hypothesis axes as leading batch axes (broadcast P
against them, e.g. P[:, None] for uv [b, j, v, 2]). Outputs `x [..., 3]` world points and a
validity mask `[...]`: fewer than two usable views, or a solution at infinity, give x = 0 and
valid = False, with finite values and gradients.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp


def _dlt_rows(P, uv):
  """The 2 DLT rows per view, [..., v, 2, 4], each normalised to unit length.

  Normalising makes every view count by its weight alone, not by its distance or focal length,
  and conditions the system in float32.
  """
  rows = jnp.stack(
    [uv[..., 0:1] * P[..., 2, :] - P[..., 0, :], uv[..., 1:2] * P[..., 2, :] - P[..., 1, :]],
    axis=-2,
  )
  norm = jnp.sqrt(jnp.sum(rows * rows, axis=-1, keepdims=True))
  return rows / jnp.maximum(norm, 1e-12)


def triangulate(P, uv, w=None, *, min_views: int = 2):
  """Weighted DLT: the world point minimising the weighted algebraic error.

  Returns (x [..., 3], valid [...]). Differentiable; the smallest right singular vector is
  found as the eigenvector of the 4x4 normal matrix with the smallest eigenvalue.
  """
  if w is None:
    w = jnp.ones(uv.shape[:-1], uv.dtype)
  w = jnp.maximum(w, 0.0)
  rows = _dlt_rows(P, uv) * w[..., None, None]
  a = rows.reshape(rows.shape[:-3] + (-1, 4))  # [..., 2v, 4]
  ata = jnp.swapaxes(a, -1, -2) @ a
  enough = jnp.sum(w > 0, axis=-1) >= min_views
  # Degenerate systems get a harmless stand-in so that eigh (and its gradient) stay finite.
  eye = jnp.eye(4, dtype=ata.dtype) * jnp.arange(1.0, 5.0, dtype=ata.dtype)
  ata = jnp.where(enough[..., None, None], ata, eye)
  # Scale-normalise: eigh's gradient divides by eigenvalue gaps, keep them O(1).
  scale = jnp.trace(ata, axis1=-2, axis2=-1)[..., None, None]
  _, vecs = jnp.linalg.eigh(ata / jnp.maximum(scale, 1e-30))
  xh = vecs[..., :, 0]
  wh = xh[..., 3]
  finite = jnp.abs(wh) > 1e-9
  valid = enough & finite
  x = xh[..., :3] / jnp.where(finite, wh, 1.0)[..., None]
  return jnp.where(valid[..., None], x, 0.0), valid


def reprojection_error(P, x, uv):
  """Pixel distance between each view's projection of x [..., 3] and uv [..., v, 2] -> [..., v].

  Points behind a camera get a large error (1e6 px), so that robust weighting drops the view.
  """
  xh = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
  proj = jnp.einsum("...vij,...j->...vi", P, xh)
  z = proj[..., 2]
  front = z > 1e-9
  pix = proj[..., :2] / jnp.where(front, z, 1.0)[..., None]
  err = jnp.sqrt(jnp.sum((pix - uv) ** 2, axis=-1) + 1e-12)
  return jnp.where(front, err, 1e6)


def pair_points(P, uv, w=None, *, scale_px: float = 10.0):
  """Every pair of views triangulated, with its robust cost over all views.

  Returns (x [..., pairs, 3], valid [..., pairs], cost [..., pairs]: the sum over views of the
  weighted Cauchy losses log(1 + (r / scale_px)^2) of the reprojection errors r, inf where the
  pair is unusable), pairs in `itertools.combinations(range(v), 2)` order.
  """
  if w is None:
    w = jnp.ones(uv.shape[:-1], uv.dtype)
  w = jnp.maximum(w, 0.0)
  nv = uv.shape[-2]
  pairs = list(itertools.combinations(range(nv), 2))
  onehot = jnp.zeros((len(pairs), nv), w.dtype)
  onehot = onehot.at[jnp.arange(len(pairs))[:, None], jnp.asarray(pairs)].set(1.0)
  pair_w = w[..., None, :] * onehot  # [..., pairs, v]
  xp, vp = triangulate(P[..., None, :, :, :], uv[..., None, :, :], pair_w)
  r = reprojection_error(P[..., None, :, :, :], xp, uv[..., None, :, :])  # [..., pairs, v]
  cost = jnp.sum(w[..., None, :] * jnp.log1p((r / scale_px) ** 2), axis=-1)
  return xp, vp, jnp.where(vp, cost, jnp.inf)


def triangulate_robust(P, uv, w=None, *, scale_px: float = 10.0, iters: int = 4, pairs=None):
  """Triangulation that tolerates outlier views (wrong detections in pseudo-labels).

  1. Every pair of usable views is triangulated; the pair whose point has the smallest robust
     cost over all views (`pair_points`) seeds.
  2. Iteratively reweighted DLT: each view's weight is multiplied by the Cauchy weight
     1 / (1 + (r / scale_px)^2) of its reprojection error r.
  `pairs`: `pair_points(P, uv, w, scale_px=scale_px)` when the caller has it already.
  Returns (x [..., 3], valid [...], final per-view weights [..., v]).
  """
  if w is None:
    w = jnp.ones(uv.shape[:-1], uv.dtype)
  w = jnp.maximum(w, 0.0)
  if uv.shape[-2] >= 2:
    xp, vp, cost = pairs if pairs is not None else pair_points(P, uv, w, scale_px=scale_px)
    best = jnp.argmin(cost, axis=-1)
    x = jnp.take_along_axis(xp, best[..., None, None], axis=-2)[..., 0, :]
    valid = jnp.any(vp, axis=-1)
  else:
    x, valid = triangulate(P, uv, w)
  weights = w
  for _ in range(iters):
    r = jax.lax.stop_gradient(reprojection_error(P, x, uv))
    weights = w / (1.0 + (r / scale_px) ** 2)
    x, valid = triangulate(P, uv, weights)
  return x, valid, weights
