"""Shading and compositing on top of the rasterizers: normals, attribute interpolation,
Lambert lighting (ambient + point light), UV textures, and compositing over a background.

Frames: everything in the camera frame (OpenCV, metres); images are [h, w, c] floats in [0, 1].
"""

from __future__ import annotations

import jax.numpy as jnp

from handflow.render.raster import Fragments


def vertex_normals(verts, faces):
  """Area-weighted vertex normals [n, 3] of a mesh verts [n, 3], faces [f, 3] (outward for
  counter-clockwise faces seen from outside)."""
  v = verts[faces]
  face_n = jnp.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])  # length = 2 * area
  n = jnp.zeros_like(verts).at[faces.reshape(-1)].add(jnp.repeat(face_n, 3, axis=0))
  return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def interpolate(frags: Fragments, faces, attrs):
  """Per-pixel attributes [h, w, c] from per-vertex attrs [n, c] (or per-face-corner [f, 3, c])
  with the fragments' perspective-correct barycentrics; zero on the background."""
  corner = attrs[faces] if attrs.ndim == 2 else attrs
  safe = jnp.maximum(frags.face_id, 0)
  out = jnp.einsum("hwk,hwkc->hwc", frags.bary, corner[safe])
  return jnp.where(frags.mask[..., None], out, 0.0)


def lambert_shade(normals, points, light_pos, *, ambient=0.35, diffuse=0.75):
  """ambient + diffuse * max(0, n . l) [..., 1], l towards a point light [3]; normals and
  points [..., 3] in the camera frame; normals facing away from the camera are flipped so that
  both sides of an open mesh are lit like its outside."""
  n = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
  n = jnp.where(jnp.sum(n * points, -1, keepdims=True) > 0, -n, n)
  to_light = light_pos - points
  l = to_light / jnp.maximum(jnp.linalg.norm(to_light, axis=-1, keepdims=True), 1e-12)  # noqa: E741
  return ambient + diffuse * jnp.maximum(jnp.sum(n * l, -1, keepdims=True), 0.0)


def lambert(albedo, normals, points, light_pos, *, ambient=0.35, diffuse=0.75):
  """albedo [..., 3] x `lambert_shade`, clipped to [0, 1]."""
  shade = lambert_shade(normals, points, light_pos, ambient=ambient, diffuse=diffuse)
  return jnp.clip(albedo * shade, 0.0, 1.0)


def sample_texture(texture, uv):
  """Bilinear lookup of texture [th, tw, c] at uv [..., 2] in [0, 1] (u right, v down; texel
  centres at (i + 0.5) / size, clamped at the borders) -> [..., c]."""
  th, tw = texture.shape[:2]
  x = jnp.clip(uv[..., 0] * tw - 0.5, 0.0, tw - 1.0)
  y = jnp.clip(uv[..., 1] * th - 0.5, 0.0, th - 1.0)
  x0 = jnp.clip(jnp.floor(x), 0, max(tw - 2, 0)).astype(jnp.int32)
  y0 = jnp.clip(jnp.floor(y), 0, max(th - 2, 0)).astype(jnp.int32)
  fx = (x - x0)[..., None]
  fy = (y - y0)[..., None]
  x1, y1 = jnp.minimum(x0 + 1, tw - 1), jnp.minimum(y0 + 1, th - 1)
  top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
  bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def composite(rgb, alpha, background):
  """rgb [h, w, 3] over background [h, w, 3] (or [3]) with alpha [h, w] in [0, 1]."""
  a = alpha[..., None].astype(rgb.dtype)
  return a * rgb + (1.0 - a) * background


def shade_hard(frags: Fragments, verts_cam, faces, albedo, light_pos, background, **kw):
  """A lit image [h, w, 3] from hard fragments: per-vertex albedo [n, 3] (or per-pixel
  [h, w, 3], e.g. a sampled texture), interpolated normals and points, Lambert, composited."""
  normals = interpolate(frags, faces, vertex_normals(verts_cam, faces))
  points = interpolate(frags, faces, verts_cam)
  color = albedo if albedo.ndim == 3 else interpolate(frags, faces, albedo)
  return composite(lambert(color, normals, points, light_pos, **kw), frags.mask, background)
