"""Differentiable renders from the hard z-buffer plus analytic antialiasing of its edges.

  img = antialias(face_id, tri, faces, attrs)          # one render: attrs [h, w, c]
  imgs = antialias_batch(face_id, tri, faces, attrs)   # a batch: [b, h, w, c], cheaper

The soft renderer (`render.soft`) gets visibility gradients by giving every face a blurred
coverage of every pixel near it: its cost is the number of (face, pixel) pairs, and its
backward pass pays for each of them. This mode instead (the idea of Laine et al. 2020,
"Modular primitives for high-performance differentiable rendering", written here from the
paper's description):

- the z-buffer (`raster.rasterize`, no gradient: face ids are integers) picks each pixel's
  face; attributes interpolated with its barycentrics are differentiable in the vertices
  (shading, texture, the interior of the image);
- visibility gradients come from the discontinuities: for every pair of horizontally or
  vertically adjacent pixels whose faces differ, the edge of the face that ends between them
  crosses the segment joining their centres at a fraction t (0: at the inside pixel's centre,
  1: at the other's). With each pixel a unit box along the segment, the face covers a share
  max(0, t - 1/2) of the outside pixel and leaves max(0, 1/2 - t) of the inside pixel
  uncovered; the two pixels' attributes are blended by those shares. t is a rational function
  of the edge's screen vertices, so the blend carries gradients to them.

An edge is handled by the pairs that cross it most squarely (horizontal pairs for edges
closer to vertical, vertical pairs for the others), so each edge is blended once. Which face
ends between two pixels: the face of a pixel whose triangle does not contain the other pixel's
centre (if both end, as at a shared edge or a silhouette against the background, the first
pixel's). The backward pass costs O(pixels), not O(face-pixel pairs): the point of this mode.

A batch is handled as one mesh of b x f faces, so its pixel pairs form one list: the walk (most
of the cost) runs only on the pairs that can blend, gathered to a static capacity with
`jnp.nonzero(size=...)`; past the capacity a `lax.cond` takes the whole list, so the result
never depends on it. A vmap of the one-image function cannot do this (under vmap the cond's
two branches would both run): it walks every pair, 1.5-1.7x slower at 64 px.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from handflow.render import raster


def face_neighbours(faces):
  """The face across each edge [f, 3] (edge k joins corners k and k + 1), -1 on the mesh's
  border. Works on traced faces (a sort of the edges' vertex pairs); meshes up to ~15k faces
  (the pair key is an int32)."""
  f = faces.shape[0]
  e = jnp.stack([faces, jnp.roll(faces, -1, axis=1)], -1).reshape(-1, 2)  # [3f, 2]
  key = jnp.min(e, -1) * (3 * f) + jnp.max(e, -1)
  order = jnp.argsort(key)
  k = key[order]
  nxt = jnp.concatenate([k[1:] == k[:-1], jnp.zeros((1,), bool)])
  prv = jnp.concatenate([jnp.zeros((1,), bool), k[1:] == k[:-1]])
  partner = jnp.where(nxt, jnp.roll(order, -1), jnp.where(prv, jnp.roll(order, 1), -1))
  out = jnp.full((3 * f,), -1, jnp.int32).at[order].set(partner.astype(jnp.int32))
  return jnp.where(out >= 0, out // 3, -1).reshape(f, 3)


def _exit(tri, sign, p_in, p_out):
  """Where the segments p_in -> p_out [m, 2] leave the triangles tri [m, 3, 2] of winding sign
  [m] (Cyrus-Beck): (t [m], the exit edge [m], the edge's direction [m, 2]); t >= 1 if they do
  not leave it."""
  ts = []
  for k in range(3):
    a, b = tri[:, k], tri[:, (k + 1) % 3]
    f_in, f_out = sign * raster.edge_function(a, b, p_in), sign * raster.edge_function(a, b, p_out)
    leaving = f_out < f_in  # the inside side is f > 0
    ts.append(jnp.where(leaving, f_in / jnp.where(leaving, f_in - f_out, 1.0), jnp.inf))
  t = jnp.stack(ts, -1)
  k = jnp.argmin(t, -1)
  a = jnp.take_along_axis(tri, k[:, None, None], 1)[:, 0]
  b = jnp.take_along_axis(tri, ((k + 1) % 3)[:, None, None], 1)[:, 0]
  return jnp.take_along_axis(t, k[:, None], -1)[:, 0], k, b - a


def _crossing(tri, tri_face, side, nbrs, face, p_in, p_out, horizontal: bool, steps: int = 3):
  """Where the surface that holds p_in [m, 2] in `face` [m] ends on the way to p_out: the
  segment leaves the face; if the edge it leaves by is shared with a neighbour facing the same
  way (an edge inside the surface, not its contour), it goes on in the neighbour, up to `steps`
  faces. tri_face [m, 3, 2]: tri[face] without gradient (the caller has it). side [f]: each
  face's screen winding (+1 / -1). Returns (t [m] in [0, 1], valid [m]): valid where the contour
  was reached and its edge is steep enough for this pair direction (see the module docstring)."""
  s0 = side[face]
  # The walk picks the face and edge without gradient; t is then recomputed on that one edge
  # (one differentiable gather instead of one per step: 3x faster backward on CPU).
  tri_ng = jax.lax.stop_gradient(tri)
  nbr = nbrs.reshape(-1)  # the face across edge k of face i at 3 i + k: one gather, where
  # take_along_axis(nbrs[face], k) built index arrays for two (with the reused tri_face, 1.1x)
  t, k, d = _exit(tri_face, s0, p_in, p_out)
  for _ in range(steps - 1):
    nb = nbr[3 * face + k]
    go = (nb >= 0) & (t < 1.0) & (side[jnp.maximum(nb, 0)] == s0)
    face = jnp.where(go, nb, face)
    t2, k2, d2 = _exit(tri_ng[face], s0, p_in, p_out)
    t, k, d = jnp.where(go, t2, t), jnp.where(go, k2, k), jnp.where(go[:, None], d2, d)
  nb = nbr[3 * face + k]
  contour = (nb < 0) | (side[jnp.maximum(nb, 0)] != s0)
  steep = jnp.abs(d[:, 1]) >= jnp.abs(d[:, 0])
  ok = contour & (t < 1.0) & (steep if horizontal else ~steep)
  a, b = tri[face, k], tri[face, (k + 1) % 3]
  f_in, f_out = s0 * raster.edge_function(a, b, p_in), s0 * raster.edge_function(a, b, p_out)
  t = f_in / jnp.where(ok, f_in - f_out, 1.0)
  return jnp.clip(jnp.where(ok, t, 0.5), 0.0, 1.0), ok


def _blend(tri, side, nbrs, fa, fb, pa, pb, ca, cb, ta, tb, a_ends, b_ends, horizontal):
  """Blend deltas (d_a, d_b) [m, c] of the pixel pairs a -> b (faces fa, fb [m], centres pa,
  pb [m, 2], attributes ca, cb [m, c], triangles ta, tb [m, 3, 2] without gradient)."""
  use_a = a_ends | ~b_ends
  face_o = jnp.where(use_a, fa, fb)
  p_in, p_out = jnp.where(use_a[:, None], pa, pb), jnp.where(use_a[:, None], pb, pa)
  c_in, c_out = jnp.where(use_a[:, None], ca, cb), jnp.where(use_a[:, None], cb, ca)
  tri_o = jnp.where(use_a[:, None, None], ta, tb)
  t, ok = _crossing(tri, tri_o, side, nbrs, jnp.maximum(face_o, 0), p_in, p_out, horizontal)
  ok = ok & (fa != fb) & (a_ends | b_ends)
  covered_out = jnp.where(ok, jnp.maximum(t - 0.5, 0.0), 0.0)[:, None]
  uncovered_in = jnp.where(ok, jnp.maximum(0.5 - t, 0.0), 0.0)[:, None]
  d_in = uncovered_in * (c_out - c_in)
  d_out = covered_out * (c_in - c_out)
  return jnp.where(use_a[:, None], d_in, d_out), jnp.where(use_a[:, None], d_out, d_in)


def _slices(shape, horizontal: bool):
  """The first and second pixels of every pair of one direction in [b, h, w] images."""
  _, h, w = shape
  every = slice(None)
  if horizontal:
    return (every, every, slice(0, w - 1)), (every, every, slice(1, w))
  return (every, slice(0, h - 1), every), (every, slice(1, h), every)


def _pairs(face_id, tri_ng, attrs, horizontal: bool):
  """The pixel pairs of one direction, flat: (fa, fb, pa, pb, ca, cb, ta, tb, a_ends, b_ends)
  (faces, centres, attributes, triangles without gradient, whether each pixel's face ends
  between them) and active: the pairs that can blend."""
  b, h, w = face_id.shape
  a_sl, b_sl = _slices(face_id.shape, horizontal)
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  centres = jnp.broadcast_to(jnp.stack([xs, ys], -1).astype(tri_ng.dtype), (b, h, w, 2))
  fa, fb = face_id[a_sl].reshape(-1), face_id[b_sl].reshape(-1)
  m = fa.shape[0]
  pa, pb = centres[a_sl].reshape(m, 2), centres[b_sl].reshape(m, 2)
  ca, cb = attrs[a_sl].reshape(m, -1), attrs[b_sl].reshape(m, -1)
  ta, tb = tri_ng[jnp.maximum(fa, 0)], tri_ng[jnp.maximum(fb, 0)]
  # Face a ends between the pixels unless its triangle holds b's centre (then b's face is in
  # front of it at b, and b's face is the one that ends); background never ends. Background
  # pairs and pixels of one face cannot blend.
  a_ends = (fa >= 0) & ~raster.contains(ta, pb)
  b_ends = (fb >= 0) & ~raster.contains(tb, pa)
  active = (fa != fb) & (a_ends | b_ends)
  return (fa, fb, pa, pb, ca, cb, ta, tb, a_ends, b_ends), active


def _pair_deltas(face_id, tri, side, nbrs, attrs, horizontal: bool, capacity):
  """Blend deltas [b, h, w, c] from the pixel pairs of one direction. face_id [b, h, w] and
  nbrs index the batch's faces stacked, tri [b * f, 3, 2]."""
  b, h, w = face_id.shape
  pairs, active = _pairs(face_id, jax.lax.stop_gradient(tri), attrs, horizontal)
  m = active.shape[0]
  blend = lambda *x: _blend(tri, side, nbrs, *x, horizontal)
  cap = m if capacity is None else int(capacity * m)
  if cap >= m:
    d_a, d_b = blend(*pairs)
  else:
    # The contour walk runs on the pairs that can blend, compacted to a static capacity; a
    # batch with more of them takes the whole set (same result, full cost).
    idx = jnp.nonzero(active, size=cap, fill_value=m)[0]

    def compact():
      sub = [x.at[idx].get(mode="fill", fill_value=0) for x in pairs]
      d_a, d_b = blend(*sub)
      scatter = lambda d: jnp.zeros((m,) + d.shape[1:], d.dtype).at[idx].add(d, mode="drop")
      return scatter(d_a), scatter(d_b)

    d_a, d_b = jax.lax.cond(jnp.sum(active) <= cap, compact, lambda: blend(*pairs))
  a_sl, b_sl = _slices(face_id.shape, horizontal)
  shape = (b, h, w - 1) if horizontal else (b, h - 1, w)
  delta = jnp.zeros(attrs.shape, attrs.dtype)
  delta = delta.at[a_sl].add(d_a.reshape(shape + attrs.shape[-1:]))
  return delta.at[b_sl].add(d_b.reshape(shape + attrs.shape[-1:]))


def _stacked(face_id, tri, nbrs=None):
  """A batch of renders of one mesh as one mesh of b * f faces: face ids [b, h, w] into it,
  tri [b * f, 3, 2] and, when given the mesh's nbrs [f, 3], the stacked neighbours."""
  b, f = tri.shape[:2]
  first = (jnp.arange(b, dtype=jnp.int32) * f)[:, None, None]
  out = (jnp.where(face_id >= 0, face_id + first, -1), tri.reshape(b * f, 3, 2))
  if nbrs is None:
    return out
  return out + (jnp.where(nbrs >= 0, nbrs + first, -1).reshape(b * f, 3),)


def blend_share(face_id, tri):
  """The largest share, over the two pair directions, of a batch's pixel pairs that can blend
  (face_id [b, h, w], tri [b, f, 3, 2]): at most `CAPACITY` takes the compacted walk."""
  face_id, tri = _stacked(face_id, tri)
  none = jnp.zeros(face_id.shape + (0,), tri.dtype)
  return jnp.maximum(*(jnp.mean(_pairs(face_id, tri, none, hz)[1]) for hz in (True, False)))


# The share of a batch's pixel pairs (per direction) the contour walk runs on: pairs of
# differing faces are ~35% of CycleHand's 64 px crops (the hand's share of the pixels), ~12%
# of `bench.render`'s views; a batch with more pays the full walk, with the same result.
CAPACITY = 0.5


def antialias_batch(face_id, tri, faces, attrs, *, capacity: float | None = CAPACITY):
  """`antialias` for a batch of renders of one mesh: face_id [b, h, w], tri [b, f, 3, 2],
  faces [f, 3], attrs [b, h, w, c] -> [b, h, w, c]. The batch's pixel pairs are handled
  together, so the walk runs on the pairs that can blend, compacted to `capacity` of them
  (None: every pair); the result does not depend on it."""
  face_id = jax.lax.stop_gradient(face_id)
  face_id, tri, nbrs = _stacked(face_id, tri, face_neighbours(faces))
  side = jax.lax.stop_gradient(
    jnp.where(raster.edge_function(tri[:, 0], tri[:, 1], tri[:, 2]) < 0, -1.0, 1.0)
  )
  return (
    attrs
    + _pair_deltas(face_id, tri, side, nbrs, attrs, True, capacity)
    + _pair_deltas(face_id, tri, side, nbrs, attrs, False, capacity)
  )


def antialias(face_id, tri, faces, attrs):
  """attrs [h, w, c] (a hard render: each pixel its face's value, the background's where
  face_id [h, w] is -1) with the visibility edges blended analytically; differentiable in the
  screen triangles tri [f, 3, 2] (pixels, `raster.screen_faces`) and in attrs. faces [f, 3]
  give the mesh's connectivity (edges inside the surface are crossed, not blended). For
  batches, `antialias_batch` (cheaper than a vmap of this)."""
  return antialias_batch(face_id[None], tri[None], faces, attrs[None], capacity=None)[0]
