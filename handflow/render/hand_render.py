"""Photometric hand renders: albedo from a UV texture (or vertex colour), lighting, compositing.

  albedo = corner_albedo(model, texture, offset)          # [f, 3, 3] per face corner
  rgb, sil = render_soft(verts_cam, faces, K, size, albedo, light, background)   # differentiable
  rgb, sil = render_aa_batch(verts_cam, faces, K, size, albedo, light, background)  # [b, ...]
  rgb, sil = render_hard(verts_cam, model, K, size, texture, light, background)   # sharp, no grad

`Light` is an ambient term, a diffuse gain and a point light's position in the camera frame
(Lambert, `shading.lambert`). The soft render (training) shades per vertex and interpolates
(Gouraud) through `soft.soft_rasterize`, with the texture looked up at every face corner: at
64 px a face of the open hand covers one or two pixels, so a per-pixel lookup would add cost,
not detail. Its colour is normalised over the faces only and composited over the background
with the soft silhouette, so the background may be any image. The hard render (inputs that
carry no gradient, figures) interpolates texture coordinates per pixel and samples the full
texture. A model without texture coordinates (MANO) uses `vertex_color` instead (CycleHand's
`texture="vertex"`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from handflow.render import antialias, raster, shading, soft


@functools.partial(
  jax.tree_util.register_dataclass, data_fields=["ambient", "diffuse", "position"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class Light:
  ambient: jax.Array  # [...] in [0, 1]
  diffuse: jax.Array  # [...] >= 0
  position: jax.Array  # [..., 3] point light, camera frame (metres)


def corner_albedo(face_uv, texture, offset=None, tone=None):
  """Albedo [f, 3, 3] at every face corner: the base `texture` [th, tw, 3] (plus a learned
  `offset` map [oh, ow, 3], any resolution, sampled at the same coordinates) at face_uv
  [f, 3, 2], times a skin-tone gain `tone` [3], clipped to [0, 1]."""
  albedo = shading.sample_texture(texture, face_uv)
  if offset is not None:
    albedo = albedo + shading.sample_texture(offset, face_uv)
  if tone is not None:
    albedo = albedo * tone
  return jnp.clip(albedo, 0.0, 1.0)


def vertex_albedo(faces, vertex_color, tone=None):
  """Albedo [f, 3, 3] from per-vertex colours [n, 3] (models without texture coordinates)."""
  albedo = vertex_color[faces]
  return jnp.clip(albedo if tone is None else albedo * tone, 0.0, 1.0)


def _lit_corners(verts_cam, faces, albedo, light: Light):
  """Lit albedo [f, 3, 3] at the face corners; the shade is computed per vertex (6x fewer
  than corners: the same values, as a corner's normal and position are its vertex's)."""
  normals = shading.vertex_normals(verts_cam, faces)
  shade = shading.lambert_shade(
    normals, verts_cam, light.position[..., None, :], ambient=light.ambient, diffuse=light.diffuse
  )
  return jnp.clip(albedo * shade[faces], 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size", "sigma", "gamma"))
def render_soft(verts_cam, faces, K, size, albedo, light: Light, background, *, sigma=0.2,
                gamma=1e-2):  # fmt: skip
  """A differentiable render of one hand: (rgb [h, w, 3] over background [h, w, 3], soft
  silhouette [h, w]). verts_cam [n, 3] camera frame, faces [f, 3], K [3, 3], size (h, w),
  albedo [f, 3, 3] per corner, light a `Light` of scalars. vmap for batches. sigma 0.2 px^2
  (about SoftRas's default softness at 64 px) keeps each face's window margin at 1 px: 1.7x
  faster than 0.5 (a 2 px margin)."""
  lit = _lit_corners(verts_cam, faces, albedo, light)
  # A fourth channel of ones aggregates to the faces' share of the weight: dividing by it
  # leaves the faces' colour, which the silhouette then composites over any background.
  attrs = jnp.concatenate([lit, jnp.ones(lit.shape[:-1] + (1,), lit.dtype)], -1)
  img = soft.soft_rasterize(verts_cam, faces, K, size, attrs, sigma=sigma, gamma=gamma)
  fg = img.color[..., :3] / jnp.maximum(img.color[..., 3:], 1e-6)
  return shading.composite(fg, img.silhouette, background), img.silhouette


def _visible_faces(verts_cam, faces, K, size):
  """The z-buffer's fragments of one hand and its screen triangles [f, 3, 2] (pixels): what
  the antialiasing reads."""
  return raster.rasterize(verts_cam, faces, K, size), raster.screen_faces(verts_cam, faces, K)[0]


@functools.partial(jax.jit, static_argnames=("size",))
def blend_share(verts_cam, faces, K, size):
  """The share of a batch's pixel pairs that can blend (`antialias.blend_share`) in
  `render_aa_batch` of the same verts_cam [b, n, 3], faces and K [b, 3, 3]: at most
  `antialias.CAPACITY` takes its compacted path."""
  frags, tri = jax.vmap(lambda v, k: _visible_faces(v, faces, k, size))(verts_cam, K)
  return antialias.blend_share(frags.face_id, tri)


@functools.partial(jax.jit, static_argnames=("size", "capacity"))
def render_aa_batch(verts_cam, faces, K, size, albedo, light: Light, background, *,
                    capacity=antialias.CAPACITY):  # fmt: skip
  """`render_aa` of a batch: verts_cam [b, n, 3], K [b, 3, 3], albedo [b, f, 3, 3], light of
  [b] leaves, background [b, h, w, 3] -> (rgb [b, h, w, 3], coverage [b, h, w]). The edges of
  the whole batch are antialiased together (`antialias.antialias_batch`: the contour walk on
  the pixel pairs that can blend only)."""

  def hard(v, k, alb, lt, bg):
    frags, tri = _visible_faces(v, faces, k, size)
    lit = shading.interpolate(frags, faces, _lit_corners(v, faces, alb, lt))
    mask = frags.mask.astype(lit.dtype)
    rgb = shading.composite(lit, mask, bg)
    return frags.face_id, tri, jnp.concatenate([rgb, mask[..., None]], -1)

  face_id, tri, attrs = jax.vmap(hard)(verts_cam, K, albedo, light, background)
  out = antialias.antialias_batch(face_id, tri, faces, attrs, capacity=capacity)
  return out[..., :3], out[..., 3]


def render_aa(verts_cam, faces, K, size, albedo, light: Light, background):
  """A differentiable render of one hand from the hard z-buffer with antialiased edges
  (`render.antialias`): (rgb [h, w, 3] over background [h, w, 3], coverage [h, w] in [0, 1]).
  Same arguments and shading as `render_soft` (per-vertex lighting, Gouraud); visibility
  gradients come from the silhouette and occlusion edges only, at a cost linear in pixels.
  For batches, `render_aa_batch` (cheaper than a vmap of this)."""
  one = lambda x: jnp.asarray(x)[None]
  rgb, cov = render_aa_batch(
    one(verts_cam), faces, one(K), size, one(albedo), jax.tree.map(one, light), one(background),
    capacity=None,
  )  # fmt: skip
  return rgb[0], cov[0]


def render_soft_batch(verts_cam, faces, K, size, albedo, light: Light, background, **kw):
  """`render_soft` of a batch, with `render_aa_batch`'s arguments."""
  one = lambda v, k, alb, lt, bg: render_soft(v, faces, k, size, alb, lt, bg, **kw)
  return jax.vmap(one)(verts_cam, K, albedo, light, background)


@functools.partial(jax.jit, static_argnames=("size",))
def render_hard(verts_cam, faces, K, size, corner_uv_or_albedo, texture, light: Light, background):
  """A sharp render of one hand (no useful gradient): (rgb [h, w, 3], mask [h, w] float).

  corner_uv_or_albedo: texture coordinates [f, 3, 2] (sampled per pixel in `texture`
  [th, tw, 3], which may already include an offset and tone) or, for models without them,
  albedo [f, 3, 3] (`texture` is then ignored)."""
  frags = raster.rasterize(verts_cam, faces, K, size)
  attr = shading.interpolate(frags, faces, corner_uv_or_albedo)
  albedo = shading.sample_texture(texture, attr) if attr.shape[-1] == 2 else attr
  normals = shading.interpolate(frags, faces, shading.vertex_normals(verts_cam, faces))
  points = shading.interpolate(frags, faces, verts_cam)
  lit = shading.lambert(
    albedo, normals, points, light.position, ambient=light.ambient, diffuse=light.diffuse
  )
  mask = frags.mask.astype(lit.dtype)
  return shading.composite(lit, mask, background), mask
