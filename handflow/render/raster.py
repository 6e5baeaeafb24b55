"""Hard rasterization: a z-buffer of face ids, perspective-correct barycentrics and depth.

  frags = rasterize(verts_cam [n, 3], faces [f, 3], K [3, 3], (height, width))
  frags.face_id [h, w] (-1: background), frags.bary [h, w, 3], frags.depth [h, w], frags.mask

Pixel centres are at integer coordinates and the camera is OpenCV's (see
`handflow.geometry.cameras`), so that rendered pixels and projected keypoints agree exactly.

Cost is bounded by testing each face only against a fixed block of pixels anchored at its
bounding box (a dense pixels x faces test is ~1 s per mesh on CPU). Faces are sorted by their
pixel extent and given windows by `tiers`: a few large windows for the largest faces, small ones
for most (the cost is the number of candidates, so this is ~2x cheaper than one window for all).
The z-buffer is one integer scatter-min over keys that pack the quantised depth (high bits,
relative to the mesh's depth range) with the face id (low bits), so the nearest face wins
without a second pass. `overflow` counts faces larger than their window (possibly clipped):
data generation checks that it is 0. Faces with a vertex behind the camera are skipped (no
near-plane clipping). Works under jit and vmap (`size` and `tiers` static).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from handflow.geometry import cameras

_KEY_MAX = np.iinfo(np.int32).max


class Fragments(NamedTuple):
  face_id: jax.Array  # [h, w] int32, -1 where no face covers the pixel centre
  bary: jax.Array  # [h, w, 3] perspective-correct barycentrics of the pixel in its face
  depth: jax.Array  # [h, w] camera z (metres), 0 on the background
  mask: jax.Array  # [h, w] bool
  overflow: jax.Array  # [] int32: faces larger than the window (possibly clipped)


def screen_faces(verts_cam, faces, K):
  """Per-face screen positions [f, 3, 2] (pixels) and camera depths [f, 3]."""
  uv, z = cameras.project(K, verts_cam)
  return uv[faces], z[faces]


def edge_xy(ax, ay, bx, by, qx, qy):
  """2D cross product (b - a) x (q - a) of coordinate arrays: positive when q is left of a->b
  (y down: clockwise)."""
  return (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)


def edge_function(a, b, p):
  """`edge_xy` of points [..., 2]."""
  return edge_xy(a[..., 0], a[..., 1], b[..., 0], b[..., 1], p[..., 0], p[..., 1])


def corners_xy(tri):
  """Triangles [..., 3, 2] -> ([x0, x1, x2], [y0, y1, y2]), each [...]."""
  return [tri[..., k, 0] for k in range(3)], [tri[..., k, 1] for k in range(3)]


def barycentrics_xy(x, y, qx, qy):
  """Screen barycentrics ([b0, b1, b2]) of points (qx, qy) in triangles of corners x, y (3
  coordinate arrays each, broadcasting with the points), and the signed doubled area.

  The per-coordinate form of `screen_barycentrics`: batched kernels (rasterization,
  antialiasing) call it on [m]-shaped arrays, which XLA:CPU vectorises several times better
  than arrays whose minor axis holds 3 corners or 2 coordinates."""
  area = edge_xy(x[0], y[0], x[1], y[1], x[2], y[2])
  safe = jnp.where(jnp.abs(area) > 1e-12, area, 1.0)
  w = [edge_xy(x[i], y[i], x[j], y[j], qx, qy) for i, j in ((1, 2), (2, 0), (0, 1))]
  return [wi / safe for wi in w], area


def inside_xy(bary, area):
  """Whether barycentrics [b0, b1, b2] (`barycentrics_xy`) lie in a non-degenerate triangle."""
  return (bary[0] >= 0.0) & (bary[1] >= 0.0) & (bary[2] >= 0.0) & (jnp.abs(area) > 1e-12)


def screen_barycentrics(tri, p):
  """Screen-space barycentrics [..., 3] of points p [..., 2] in triangles tri [..., 3, 2], and the
  signed doubled area [...] (either winding works; degenerate triangles get area 0).

  Kept in this stacked form rather than stacking `barycentrics_xy`'s: dividing after the stack
  rounds differently in the last bit on XLA:CPU, and the fragments (so rendered datasets) stay
  bit for bit those of earlier versions."""
  a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
  area = edge_function(a, b, c)
  w0, w1, w2 = edge_function(b, c, p), edge_function(c, a, p), edge_function(a, b, p)
  safe = jnp.where(jnp.abs(area) > 1e-12, area, 1.0)
  return jnp.stack([w0, w1, w2], -1) / safe[..., None], area


def contains(tri, p):
  """Whether points p [..., 2] lie in triangles tri [..., 3, 2] (either winding; degenerate
  triangles hold nothing)."""
  return inside_xy(*barycentrics_xy(*corners_xy(tri), p[..., 0], p[..., 1]))


def perspective_correct(bary_screen, z):
  """Screen barycentrics [..., 3] and vertex depths [..., 3] -> (camera barycentrics, depth)."""
  w = bary_screen / z
  inv_z = jnp.sum(w, axis=-1)
  safe = jnp.where(jnp.abs(inv_z) > 1e-12, inv_z, 1.0)
  return w / safe[..., None], 1.0 / safe


def _candidates(tri, z, px, py, size):
  """Hard-mode tests of candidate pixels px, py [c, wh, ww] of faces tri [c, 3, 2], z [c, 3]:
  (pixel index, depth, ok), each flat.

  The arithmetic of `screen_barycentrics` and `perspective_correct` on per-coordinate arrays
  [c, wh * ww] (`barycentrics_xy`): with the corners and coordinates in a minor axis of 3 or 2
  XLA:CPU vectorised poorly (6x slower). The fragments are bit for bit those of the stacked
  form (checked on 256 random views of the open hand at 32 to 256 px)."""
  h, w = size
  c = px.shape[0]
  px, py = px.reshape(c, -1), py.reshape(c, -1)
  x, y = corners_xy(tri[:, None])
  bary, area = barycentrics_xy(x, y, px.astype(tri.dtype), py.astype(tri.dtype))
  inside = inside_xy(bary, area)
  inv_z = bary[0] / z[:, 0, None] + bary[1] / z[:, 1, None] + bary[2] / z[:, 2, None]
  depth = 1.0 / jnp.where(jnp.abs(inv_z) > 1e-12, inv_z, 1.0)
  in_image = (px >= 0) & (px < w) & (py >= 0) & (py < h)
  front = jnp.all(z > 1e-6, axis=-1)[:, None]
  ok = inside & in_image & front
  pix = jnp.where(ok, py * w + px, h * w)  # invalid candidates go to a spare slot
  return pix.reshape(-1), depth.reshape(-1), ok.reshape(-1)


# (window in pixels, share of the faces) from the largest faces to the smallest; the last tier
# takes the rest. Sized for a hand filling a 128 x 128 crop: over 384 synthetic_hands views the
# open hand's largest face spans up to 19 px, the 1%-largest up to 12, the 4%-largest 10, the
# 16%-largest 7, the 31%-largest 5. Tighter windows overflowed in a third of the views, and
# re-rendering those cost more than these windows (0 overflows; 2x faster clip generation).
DEFAULT_TIERS = ((24, 0.005), (16, 0.01), (12, 0.03), (10, 0.12), (8, 0.15), (6, 0.3), (5, 1.0))


def tiers_for(size, reference: int = 128, tiers=DEFAULT_TIERS):
  """DEFAULT_TIERS scaled to an image of `size` (height, width) showing the hand as large.
  Neighbouring tiers that scale to one window are merged (shares added): the same windows
  for every face, and fewer unrolled tiers to compile in small images (7 -> 4 at 32 px)."""
  scale = max(size) / reference
  out = []
  for w, share in tiers:
    w = max(2, int(np.ceil(w * scale)))
    if out and out[-1][0] == w:
      out[-1] = (w, out[-1][1] + share)  # the last tier takes the rest whatever its share
    else:
      out.append((w, share))
  return tuple(out)


def _tier_counts(f: int, tiers) -> list[int]:
  counts = [int(round(share * f)) for _, share in tiers[:-1]]
  counts = [min(c, f - sum(counts[:i])) for i, c in enumerate(counts)]
  return counts + [f - sum(counts)]


def _largest_first(extent, cap: int):
  """Face indices [f] by extent [f], largest first, ties by index, extents >= cap as one: a
  counting sort (O(f * cap) elementwise work; `argsort` took 6x longer on CPU). With cap above
  every window, a face of extent >= cap overflows whichever window it gets, so the tiers hold
  what a full sort gives them up to which of those faces overflow where."""
  f = extent.shape[0]
  bucket = cap - jnp.clip(extent, 0, cap)  # 0: the largest faces
  onehot = (bucket[:, None] == jnp.arange(cap + 1)[None, :]).astype(jnp.int32)  # [f, cap + 1]
  counts = jnp.sum(onehot, 0)
  before = jnp.cumsum(counts) - counts  # faces in larger buckets
  earlier = jnp.cumsum(onehot, 0) - onehot  # earlier faces in the same bucket
  rank = before[bucket] + jnp.take_along_axis(earlier, bucket[:, None], 1)[:, 0]
  return jnp.zeros((f,), jnp.int32).at[rank].set(jnp.arange(f, dtype=jnp.int32))


def face_windows(tri, size, tiers, margin: int = 0):
  """Candidate pixels of every face, by tier.

  tri [f, 3, 2] screen triangles. Returns ([(face ids [c], px [c, wh, ww], py [c, wh, ww]), ...],
  overflow): each face's window starts `margin` pixels before its bounding box and spans its
  tier's window plus 2 * margin; overflow counts faces larger than their tier's window.
  """
  h, w = size
  f = tri.shape[0]
  lo = jnp.ceil(jnp.min(tri, axis=1)).astype(jnp.int32)  # first pixel centre in the bbox
  hi = jnp.floor(jnp.max(tri, axis=1)).astype(jnp.int32)
  extent = jnp.max(hi - lo + 1, axis=-1)
  # Extents past the image sort as one: a whole-image window holds any of them.
  order = _largest_first(extent, min(max(win for win, _ in tiers), max(h, w)) + 1)
  out, window_of, start = [], jnp.zeros((f,), jnp.int32), 0
  for (win, _), count in zip(tiers, _tier_counts(f, tiers), strict=True):
    if count == 0:
      continue
    idx = order[start : start + count]
    start += count
    window_of = window_of.at[idx].set(win)
    if win >= max(h, w):  # the whole image
      x0, y0, wh, ww = jnp.zeros((count,), jnp.int32), jnp.zeros((count,), jnp.int32), h, w
    else:
      x0, y0, wh, ww = lo[idx, 0] - margin, lo[idx, 1] - margin, win + 2 * margin, win + 2 * margin
    dy, dx = jnp.meshgrid(jnp.arange(wh), jnp.arange(ww), indexing="ij")
    out.append((idx, x0[:, None, None] + dx, y0[:, None, None] + dy))
  return out, jnp.sum(extent > window_of).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("size", "tiers"))
def rasterize(verts_cam, faces, K, size, *, tiers=None) -> Fragments:
  """Hard z-buffer rasterization of one mesh (vmap for batches). See the module docstring.

  verts_cam [n, 3] camera frame (metres), faces [f, 3] int, K [3, 3], size = (height, width).
  tiers: ((window, share of faces), ...) from the largest faces down; a window of max(size)
  tests a face against the whole image; None: `tiers_for(size)`.
  """
  h, w = size
  tiers = tiers_for(size) if tiers is None else tiers
  f = faces.shape[0]
  face_bits = max(1, int(np.ceil(np.log2(f + 1))))
  # At most 2^23 levels: float32 holds the scaled depth exactly, so the farthest face cannot
  # round up to 2^(31 - face_bits) and overflow the key (a 4-face mesh did).
  depth_levels = min(2 ** (31 - face_bits), 2**23) - 1
  tri, z = screen_faces(verts_cam, faces, K)
  windows, overflow = face_windows(tri, size, tiers)
  parts = [
    (
      *_candidates(tri[idx], z[idx], px, py, size),
      jnp.broadcast_to(idx[:, None, None], px.shape).reshape(-1),
    )
    for idx, px, py in windows
  ]
  pix, depth, ok, fid = (jnp.concatenate(x) for x in zip(*parts, strict=True))
  # Depth quantised over the visible depth range of this mesh, packed above the face id.
  zs = jnp.where(ok, depth, jnp.inf)
  z_near = jnp.min(zs)
  z_far = jnp.max(jnp.where(ok, depth, -jnp.inf))
  span = jnp.maximum(z_far - z_near, 1e-9)
  q = jnp.clip((depth - z_near) / span * depth_levels, 0, depth_levels).astype(jnp.int32)
  key = jnp.where(ok, (q << face_bits) | fid, _KEY_MAX)
  zbuf = jnp.full((h * w + 1,), _KEY_MAX, jnp.int32).at[pix].min(key)[: h * w]
  covered = zbuf != _KEY_MAX
  face_id = jnp.where(covered, zbuf & ((1 << face_bits) - 1), -1)
  # Exact barycentrics and depth of the winning face at each pixel centre.
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  p = jnp.stack([xs.reshape(-1), ys.reshape(-1)], -1).astype(tri.dtype)
  safe_id = jnp.maximum(face_id, 0)
  bary_s, _ = screen_barycentrics(tri[safe_id], p)
  bary, d = perspective_correct(bary_s, z[safe_id])
  return Fragments(
    face_id=face_id.reshape(h, w).astype(jnp.int32),
    bary=jnp.where(covered[:, None], bary, 0.0).reshape(h, w, 3),
    depth=jnp.where(covered, d, 0.0).reshape(h, w),
    mask=covered.reshape(h, w),
    overflow=overflow,
  )
