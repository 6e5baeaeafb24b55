"""Soft, differentiable rasterization (SoftRas-style aggregation), windowed like the hard mode.

For a pixel p and face j with squared screen distance d2_j(p) to the triangle (0 inside) and
sign delta_j = +1 inside / -1 outside, the face's coverage is D_j = sigmoid(delta_j d2_j / sigma)
(sigma in pixels^2). Then, per pixel:
- silhouette  S = 1 - prod_j (1 - D_j), accumulated as a scatter-add of log(1 - D_j);
- depth and colour are the aggregation sum_j w_j a_j + w_bg a_bg with
  w_j ~ D_j exp(zn_j / gamma), zn the inverse depth normalised between a background plane behind
  the mesh and its nearest point (near faces dominate as gamma -> 0), and a background weight
  exp(eps / gamma).
Each face touches only the pixels of its window (its tier's window plus a margin where
D_j > 1e-2), so the cost is close to the hard mode's, and gradients flow through the scatter-adds.
Attributes are per-vertex, interpolated with screen barycentrics clamped to the triangle.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from handflow.render import raster


class SoftImage(NamedTuple):
  silhouette: jax.Array  # [h, w] in [0, 1]
  depth: jax.Array  # [h, w] aggregated camera depth (background: 2 x the mesh's farthest depth)
  color: jax.Array  # [h, w, c] aggregated colour (background: `background`), or [h, w, 0]


def _segment_dist2(p, a, b):
  """Squared distance from points p [..., 2] to segments a-b [..., 2]."""
  ab = b - a
  t = jnp.sum((p - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-12)
  q = a + jnp.clip(t, 0.0, 1.0)[..., None] * ab
  return jnp.sum((p - q) ** 2, -1)


# Coverage below which a face does not touch a pixel: sets the window margin, and is applied
# explicitly so that results do not depend on the tiers (a face's exp(zn / gamma) weight would
# otherwise let it win pixels far outside it when its window is large).
COVERAGE_CUT = 1e-2
_LOGIT_CUT = float(np.log(COVERAGE_CUT / (1.0 - COVERAGE_CUT)))


def margin_px(sigma: float, eps: float = COVERAGE_CUT) -> int:
  """Pixels beyond a face where its coverage D still exceeds eps."""
  return int(np.ceil(np.sqrt(sigma * np.log(1.0 / eps))))


def _soft_candidates(verts_cam, faces, K, size, sigma, tiers):
  """Per tier: (face ids, pixel index [c*], x = logit of D [c*], clamped barycentrics
  [c*, 3], depth at the clamped point [c*], ok [c*]) and the mesh's (z_near, z_far)."""
  h, w = size
  tri, z = raster.screen_faces(verts_cam, faces, K)
  tiers = raster.tiers_for(size) if tiers is None else tiers
  windows, _ = raster.face_windows(tri, size, tiers, margin_px(sigma))
  front = jnp.all(z > 1e-6, axis=-1)
  z_near = jnp.min(jnp.where(front[:, None], z, jnp.inf))
  z_far = jnp.max(jnp.where(front[:, None], z, -jnp.inf))
  out = []
  for idx, px, py in windows:
    t = tri[idx][:, None, None]  # [c, 1, 1, 3, 2]
    p = jnp.stack([px, py], -1).astype(tri.dtype)
    bary, area = raster.screen_barycentrics(t, p)
    inside = jnp.all(bary >= 0.0, -1)
    d2 = jnp.minimum(
      jnp.minimum(
        _segment_dist2(p, t[..., 0, :], t[..., 1, :]), _segment_dist2(p, t[..., 1, :], t[..., 2, :])
      ),
      _segment_dist2(p, t[..., 2, :], t[..., 0, :]),
    )
    x = jnp.where(inside, d2, -d2) / sigma  # D = sigmoid(x)
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h) & front[idx][:, None, None] & (x > _LOGIT_CUT)
    ok = ok & (jnp.abs(area) > 1e-12)
    bc = jnp.clip(bary, 0.0, None)
    bc = bc / jnp.maximum(jnp.sum(bc, -1, keepdims=True), 1e-12)
    zf = 1.0 / jnp.sum(bc / z[idx][:, None, None], -1)
    pix = jnp.where(ok, py * w + px, h * w)
    out.append(
      (idx, pix.reshape(-1), x.reshape(-1), bc.reshape(-1, 3), zf.reshape(-1), ok.reshape(-1))
    )
  return out, z_near, z_far


@functools.partial(jax.jit, static_argnames=("size", "tiers", "sigma"))
def soft_silhouette(verts_cam, faces, K, size, *, sigma: float = 0.5, tiers=None):
  """Soft silhouette [h, w] of one mesh: 1 - prod_j (1 - D_j). See the module docstring."""
  h, w = size
  cands, _, _ = _soft_candidates(verts_cam, faces, K, size, sigma, tiers)
  pix = jnp.concatenate([c[1] for c in cands])
  log1m = jnp.concatenate([jnp.where(c[5], jax.nn.log_sigmoid(-c[2]), 0.0) for c in cands])
  return (1.0 - jnp.exp(jnp.zeros((h * w + 1,)).at[pix].add(log1m)[: h * w])).reshape(h, w)


@functools.partial(jax.jit, static_argnames=("size", "tiers", "sigma", "gamma"))
def soft_rasterize(
  verts_cam,
  faces,
  K,
  size,
  colors=None,
  background=None,
  *,
  sigma: float = 0.5,
  gamma: float = 1e-2,
  tiers=None,
) -> SoftImage:
  """Soft silhouette, depth and colour of one mesh (vmap for batches).

  verts_cam [n, 3] camera frame, faces [f, 3], K [3, 3], size (h, w); colors [n, c] per-vertex
  or [f, 3, c] per-face-corner attributes (texture seams), or None; background [c] or None (zeros). sigma: edge softness in pixels^2; gamma:
  depth sharpness of the aggregation; tiers: as `raster.rasterize` (the window margin is added).
  """
  h, w = size
  cands, z_near, z_far = _soft_candidates(verts_cam, faces, K, size, sigma, tiers)
  n_c = 0 if colors is None else colors.shape[-1]
  corners = None if colors is None else (colors if colors.ndim == 3 else colors[faces])
  pix = jnp.concatenate([c[1] for c in cands])
  x = jnp.concatenate([c[2] for c in cands])
  ok = jnp.concatenate([c[5] for c in cands])
  zf = jnp.concatenate([c[4] for c in cands])
  log1m = jnp.where(ok, jax.nn.log_sigmoid(-x), 0.0)
  silhouette = 1.0 - jnp.exp(jnp.zeros((h * w + 1,)).at[pix].add(log1m)[: h * w])
  # Aggregation weights, normalised per pixel with a (gradient-free) running max for stability.
  # Inverse depth normalised between a background plane behind the mesh (z_bg = 2 z_far) and
  # its nearest point: every surface then outweighs the background (SoftRas uses the frustum's
  # planes; the mesh's own range would tie its farthest surface with the background).
  z_bg = 2.0 * z_far
  zn = (1.0 / zf - 1.0 / z_bg) / jnp.maximum(1.0 / z_near - 1.0 / z_bg, 1e-12)
  logw = jnp.where(ok, jax.nn.log_sigmoid(x) + zn / gamma, -jnp.inf)
  bg = 1e-3 / gamma
  shift = jnp.full((h * w + 1,), bg).at[pix].max(jax.lax.stop_gradient(logw))
  wgt = jnp.exp(logw - shift[pix])
  w_bg = jnp.exp(bg - shift[: h * w])
  norm = jnp.zeros((h * w + 1,)).at[pix].add(wgt)[: h * w] + w_bg
  depth = (jnp.zeros((h * w + 1,)).at[pix].add(wgt * zf)[: h * w] + w_bg * z_bg) / norm
  if n_c:
    # Per tier: clamped barycentrics [faces, pixels, 3] x corner attributes [faces, 3, c].
    col = jnp.concatenate(
      [
        jnp.einsum("fpk,fkd->fpd", bc.reshape(idx.shape[0], -1, 3), corners[idx]).reshape(
          -1, n_c
        )
        for idx, _, _, bc, _, _ in cands
      ]
    )
    bg_col = jnp.zeros((n_c,)) if background is None else jnp.asarray(background)
    col_sum = jnp.zeros((h * w + 1, n_c)).at[pix].add(wgt[:, None] * col)[: h * w]
    color = (col_sum + w_bg[:, None] * bg_col) / norm[:, None]
  else:
    color = jnp.zeros((h * w, 0))
  return SoftImage(silhouette.reshape(h, w), depth.reshape(h, w), color.reshape(h, w, n_c))
