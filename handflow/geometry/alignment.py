"""Alignment of predictions to ground truth: Procrustes, root, scale-and-root.

All functions take `pred [..., n, 3]` and `gt [..., n, 3]` and return the aligned prediction
(same shape); they are batched, jit-able, and differentiable in `pred` (Procrustes through its
SVD: keep `allow_reflection=False` in training losses).

Procrustes follows the official FreiHAND scorer (`align_w_scale`, also used by HO3D and
DexYCB's toolkit, REFERENCE §2): centre both sets, divide each by its Frobenius norm, solve the
orthogonal Procrustes problem, scale by the sum of singular values, and map the prediction onto
the ground truth. The official scorers allow reflections (no det = +1 constraint):
`allow_reflection=True` reproduces them; `False` forces a proper rotation, for losses and for
protocols that fix the determinant (HanCo's, as used by HaMuCo).
"""

from __future__ import annotations

import jax.numpy as jnp


def similarity_transform(pred, gt, *, allow_reflection: bool = True, eps: float = 1e-8):
  """The similarity (s, R, t) mapping pred onto gt: aligned = s * pred @ R^T + t.

  pred, gt [..., n, 3] -> s [...], R [..., 3, 3], t [..., 3].
  """
  mu_p = jnp.mean(pred, axis=-2, keepdims=True)
  mu_g = jnp.mean(gt, axis=-2, keepdims=True)
  p, g = pred - mu_p, gt - mu_g
  norm_p = jnp.sqrt(jnp.sum(p * p, axis=(-2, -1)) + eps**2)
  norm_g = jnp.sqrt(jnp.sum(g * g, axis=(-2, -1)) + eps**2)
  p_n = p / norm_p[..., None, None]
  g_n = g / norm_g[..., None, None]
  # scipy's orthogonal_procrustes(g_n, p_n): svd(g_n^T p_n) = U S V^T, R = U V^T minimises
  # |g_n R - p_n|; the scorer maps pred_n @ R^T (each point x -> R x) onto g_n.
  m = jnp.swapaxes(g_n, -1, -2) @ p_n
  u, sv, vt = jnp.linalg.svd(m)
  if not allow_reflection:
    det = jnp.linalg.det(u @ vt)
    flip = jnp.where(det < 0, -1.0, 1.0)
    u = u.at[..., :, 2].multiply(flip[..., None])
    sv = sv.at[..., 2].multiply(flip)
  rot = u @ vt
  scale = jnp.sum(sv, axis=-1) * norm_g / norm_p
  t = mu_g[..., 0, :] - scale[..., None] * jnp.einsum("...ij,...j->...i", rot, mu_p[..., 0, :])
  return scale, rot, t


def apply_similarity(x, scale, rot, t):
  """x [..., n, 3] -> s * x @ R^T + t."""
  return scale[..., None, None] * jnp.einsum("...ij,...nj->...ni", rot, x) + t[..., None, :]


def procrustes(pred, gt, *, allow_reflection: bool = True):
  """pred aligned to gt by the best similarity transform (see module docstring)."""
  return apply_similarity(pred, *similarity_transform(pred, gt, allow_reflection=allow_reflection))


def align_root(pred, gt, root: int = 0):
  """pred translated so that its keypoint `root` coincides with gt's."""
  return pred - pred[..., root : root + 1, :] + gt[..., root : root + 1, :]


def align_scale_root(pred, gt, *, root: int, ref: tuple[int, int], eps: float = 1e-9):
  """pred scaled about its `root` so that its |ref[1] - ref[0]| bone length equals gt's, then
  translated so that the roots coincide.

  HanCo (HaMuCo's protocol): OpenPose order, root = ref[1] = 9 (middle MCP), ref = (0, 9).
  HO3D's scale-translation alignment: HO3D order, root = 0, ref = (0, 4).
  A prediction with a zero-length reference bone is only translated (as the official HO3D code).
  """
  length = lambda x: jnp.sqrt(jnp.sum((x[..., ref[1], :] - x[..., ref[0], :]) ** 2, axis=-1))
  lp, lg = length(pred), length(gt)
  scale = jnp.where(lp > eps, lg / jnp.where(lp > eps, lp, 1.0), 1.0)
  rel = pred - pred[..., root : root + 1, :]
  return rel * scale[..., None, None] + gt[..., root : root + 1, :]
