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


# Coverage below which a face does not touch a pixel: sets the window margin, and is applied
# explicitly so that results do not depend on the tiers (a face's exp(zn / gamma) weight would
# otherwise let it win pixels far outside it when its window is large).
COVERAGE_CUT = 1e-2
_LOGIT_CUT = float(np.log(COVERAGE_CUT / (1.0 - COVERAGE_CUT)))


def margin_px(sigma: float, eps: float = COVERAGE_CUT) -> int:
  """Pixels beyond a face where its coverage D still exceeds eps."""
  return int(np.ceil(np.sqrt(sigma * np.log(1.0 / eps))))


def _seg_dist2(x, y, ax, ay, bx, by):
  """Squared distance from points (x, y) to segments a-b, coordinates as separate arrays."""
  ux, uy = bx - ax, by - ay
  t = ((x - ax) * ux + (y - ay) * uy) / jnp.maximum(ux * ux + uy * uy, 1e-12)
  t = jnp.clip(t, 0.0, 1.0)
  dx, dy = x - ax - t * ux, y - ay - t * uy
  return dx * dx + dy * dy


def _soft_candidates(verts_cam, faces, K, size, sigma, tiers):
  """Per tier: (face ids [c], pixel index [c*], x = logit of D [c*], clamped barycentrics
  (3 arrays [c, wh, ww]), depth at the clamped point [c*], ok [c*]) and the mesh's
  (z_near, z_far). Coordinates are kept as separate arrays (x and y, one per corner) rather
  than trailing axes of size 2 or 3: XLA then fuses the whole test into a few vectorised loops
  (3x faster on CPU than the stacked form)."""
  h, w = size
  tri, z = raster.screen_faces(verts_cam, faces, K)
  tiers = raster.tiers_for(size) if tiers is None else tiers
  windows, _ = raster.face_windows(tri, size, tiers, margin_px(sigma))
  front = jnp.all(z > 1e-6, axis=-1)
  z_near = jnp.min(jnp.where(front[:, None], z, jnp.inf))
  z_far = jnp.max(jnp.where(front[:, None], z, -jnp.inf))
  out = []
  for idx, px, py in windows:
    c3 = lambda a: a[:, None, None]  # per-face scalars against the window [c, wh, ww]
    t, zt = tri[idx], z[idx]
    ax, ay, bx, by, cx, cy = (c3(t[:, k, d]) for k in range(3) for d in range(2))
    x, y = px.astype(tri.dtype), py.astype(tri.dtype)
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    safe = jnp.where(jnp.abs(area) > 1e-12, area, 1.0)
    b0 = ((cx - bx) * (y - by) - (cy - by) * (x - bx)) / safe
    b1 = ((ax - cx) * (y - cy) - (ay - cy) * (x - cx)) / safe
    b2 = ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / safe
    inside = (b0 >= 0.0) & (b1 >= 0.0) & (b2 >= 0.0)
    d2 = jnp.minimum(
      jnp.minimum(_seg_dist2(x, y, ax, ay, bx, by), _seg_dist2(x, y, bx, by, cx, cy)),
      _seg_dist2(x, y, cx, cy, ax, ay),
    )
    logit = jnp.where(inside, d2, -d2) / sigma  # D = sigmoid(logit)
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h) & c3(front[idx]) & (logit > _LOGIT_CUT)
    ok = ok & (jnp.abs(area) > 1e-12)
    b0, b1, b2 = (jnp.maximum(b, 0.0) for b in (b0, b1, b2))
    norm = jnp.maximum(b0 + b1 + b2, 1e-12)
    bc = (b0 / norm, b1 / norm, b2 / norm)
    zf = 1.0 / (bc[0] / c3(zt[:, 0]) + bc[1] / c3(zt[:, 1]) + bc[2] / c3(zt[:, 2]))
    pix = jnp.where(ok, py * w + px, h * w)
    out.append((idx, pix.reshape(-1), logit.reshape(-1), bc, zf.reshape(-1), ok.reshape(-1)))
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
  or [f, 3, c] per-face-corner attributes (texture seams), or None; background [c] or None
  (zeros). sigma: edge softness in pixels^2; gamma: depth sharpness of the aggregation; tiers:
  as `raster.rasterize` (the window margin is added).
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
  # One scatter of rows (log(1 - D), w, w z, w colour) instead of one per quantity: XLA's CPU
  # scatter costs per update, not per byte.
  cols = [log1m[:, None], wgt[:, None], (wgt * zf)[:, None]]
  if n_c:
    # Per tier: sum over corners k of barycentric k [c, wh, ww] x attribute k [c, n_c].
    col = jnp.concatenate(
      [
        sum(bc[k][..., None] * corners[idx][:, None, None, k] for k in range(3)).reshape(-1, n_c)
        for idx, _, _, bc, _, _ in cands
      ]
    )
    cols.append(wgt[:, None] * col)
  acc = jnp.zeros((h * w + 1, 3 + n_c)).at[pix].add(jnp.concatenate(cols, -1))[: h * w]
  silhouette = 1.0 - jnp.exp(acc[:, 0])
  norm = acc[:, 1] + w_bg
  depth = (acc[:, 2] + w_bg * z_bg) / norm
  if n_c:
    bg_col = jnp.zeros((n_c,)) if background is None else jnp.asarray(background)
    color = (acc[:, 3:] + w_bg[:, None] * bg_col) / norm[:, None]
  else:
    color = jnp.zeros((h * w, 0))
  return SoftImage(silhouette.reshape(h, w), depth.reshape(h, w), color.reshape(h, w, n_c))
