"""CycleHand's appearance and scenes: a hand's texture and the sharp renders of the cycle.

  look = Appearance.create(model, "uv", texture_resolution)
  albedo = look.albedo(offset)                          # [f, 3, 3] per face corner
  images = look.render_sharp(verts, K, size, offsets, light, background)      # no gradient
  image_b = look.scene(verts_b, root, offsets, K, size, rgb, key, new_background)

The texture is a base skin map plus the network's offset (any resolution, resampled), times a
skin-tone gain. `texture`: "uv" (the open hand's texture coordinates on the shipped base skin
map, `hand.skin_texture`) or "vertex" (a planar projection of the rest hand indexes the offset
map over a uniform skin tone: the only choice for MANO, which has no texture coordinates).
A scene (the cycle's image (b)) draws its lighting, skin tone and background at random: the
network must read the hand under any of them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from handflow.hand import skin_texture
from handflow.models import hand_pose_net
from handflow.render import hand_render

TEXTURES = ("uv", "vertex")
SKIN_TONE = np.array([0.8, 0.6, 0.5], np.float32)


def vertex_uv(model) -> np.ndarray:
  """Per-vertex texture coordinates [n, 2] for models without UVs: the rest hand projected on
  its palm plane (x: wrist -> fingers, z: thumb -> pinky), normalised to [0.02, 0.98]."""
  v = np.asarray(model.v_template).T[:, [0, 2]]
  lo, hi = v.min(0), v.max(0)
  return (0.02 + 0.96 * (v - lo) / np.maximum(hi - lo, 1e-9)).astype(np.float32)


def rotate_about(R, x, root, to=None):
  """Points x [n, p, 3] rotated by R [n, 3, 3] about root [n, 3], then moved to `to` [n, 3]
  (default: root)."""
  to = root if to is None else to
  return jnp.einsum("nij,npj->npi", R, x - root[:, None]) + to[:, None]


@dataclasses.dataclass(frozen=True)
class Appearance:
  """A hand model's texture: faces [f, 3], face_uv [f, 3, 2] into base_texture [th, tw, 3]."""

  faces: jax.Array
  face_uv: jax.Array
  base_texture: jax.Array

  @classmethod
  def create(cls, model, mode: str, resolution: int) -> Appearance:
    if mode not in TEXTURES:
      raise ValueError(f"texture '{mode}': one of {TEXTURES}")
    if mode == "uv":
      return cls(model.faces, model.face_uv, jnp.asarray(skin_texture.load()))
    face_uv = jnp.asarray(vertex_uv(model))[model.faces]
    base = jnp.broadcast_to(jnp.asarray(SKIN_TONE), (resolution, resolution, 3))
    return cls(model.faces, face_uv, base)

  def albedo(self, offset):
    """Albedo [f, 3, 3] at the face corners with the network's texture offset [r, r, 3]."""
    return hand_render.corner_albedo(self.face_uv, self.base_texture, offset)

  def texture_map(self, offset, tone=None):
    """The full texture [th, tw, 3]: the base map plus a texture offset [r, r, 3] (resampled),
    times a skin-tone gain [3] or [1, 3], clipped."""
    tex = self.base_texture + jax.image.resize(offset, self.base_texture.shape, "linear")
    return jnp.clip(tex if tone is None else tex * tone, 0.0, 1.0)

  def render_sharp(self, verts, K, size, offsets, light, background, tone=None):
    """Sharp renders [n, s, s, 3] of n hands (per-pixel texture lookup; no useful gradient)."""
    tone = jnp.ones((verts.shape[0], 1, 3)) if tone is None else tone

    def one(v, k, off, lt, bg, tn):
      tex = self.texture_map(off, tn)
      img, _ = hand_render.render_hard(v, self.faces, k, (size, size), self.face_uv, tex, lt, bg)
      return img

    return jax.vmap(one)(verts, K, offsets, light, background, tone)

  def scene(self, verts, root, offsets, K, size, rgb, key, new_background: float):
    """Sharp renders [n, s, s, 3] of hands verts [n, v, 3] (root [n, 3], texture offsets
    [n, r, r, 3]) under a random ambient and point light and skin tone, over their own image
    rgb [n, s, s, 3] or, with probability `new_background`, another image of the batch."""
    n = verts.shape[0]
    k = jax.random.split(key, 6)
    ambient = jax.random.uniform(k[0], (n,), minval=0.2, maxval=0.8)
    diffuse = jax.random.uniform(k[1], (n,), minval=0.3, maxval=0.9)
    direction = jax.random.normal(k[2], (n, 3)) + jnp.asarray([0.0, -0.5, -1.0])
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    light = hand_render.Light(ambient, diffuse, root + hand_pose_net.LIGHT_DISTANCE_M * direction)
    tone = jax.random.uniform(k[3], (n, 1, 1), minval=0.75, maxval=1.2) * jax.random.uniform(
      k[4], (n, 1, 3), minval=0.93, maxval=1.07
    )
    new = jax.random.bernoulli(k[5], new_background, (n,))
    background = jnp.where(new[:, None, None, None], jnp.roll(rgb, 1, axis=0), rgb)
    return self.render_sharp(verts, K, size, offsets, light, background, tone)
