"""The MANO head every mesh method shares: features -> articulated hand -> placed hand.

- `ManoHead` (Flax): an MLP from a feature vector to residual 6D rotations of the finger joints
  (15; 16 with `global_orient`, the wrist's world or camera orientation first), shape
  coefficients and, with `camera`, a weak-perspective camera (scale, tx, ty). The output layer
  starts at zero, so an untrained head gives the flat mean hand (and the camera `CAMERA_INIT`).
  Iterative regressors (PyMAF, HMR) feed the previous estimate back in with the features.
- `articulate(model, rot6d_delta, betas, convention)`: the hand kernel on those outputs ->
  vertices, 21 keypoints in the convention's order and the 16 rotations (hand frame, metres).
- `place_by_similarity(keypoints, vertices, target)`: the hand placed on target keypoints by the
  best similarity without reflection (multi-view methods: rotation, scale and translation come
  from triangulated joints; no gradient flows through the fit); `place_rigid` holds the scale
  at 1, so that the shape coefficients carry the hand's size.
- `weak_perspective(points, camera)`: points [..., 3] -> image positions [..., 2] in crop units
  (single-view methods): s * (x, y) + (tx, ty), s > 0 through a softplus.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.geometry import alignment
from handflow.hand import conventions, rotations

IDENTITY_6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
CAMERA_INIT = (1.0, 0.5, 0.5)  # scale (after softplus shift), tx, ty: the crop's centre


@functools.partial(
  jax.tree_util.register_dataclass, data_fields=["rot6d_delta", "betas", "camera"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class ManoParams:
  rot6d_delta: jax.Array  # [..., 15 or 16, 6] residuals from the identity (6D, Zhou et al.)
  betas: jax.Array  # [..., nb]
  camera: jax.Array | None = None  # [..., 3] raw weak-perspective camera, or None


class ManoHead(nn.Module):
  hidden: int
  num_betas: int
  global_orient: bool = False
  camera: bool = False

  @nn.compact
  def __call__(self, x) -> ManoParams:
    """x [..., d] -> ManoParams with leading shape [...]."""
    nj = 16 if self.global_orient else 15
    y = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    n_out = nj * 6 + self.num_betas + (3 if self.camera else 0)
    out = nn.Dense(n_out, kernel_init=nn.initializers.zeros, name="out")(y)
    lead = out.shape[:-1]
    return ManoParams(
      rot6d_delta=out[..., : nj * 6].reshape(lead + (nj, 6)),
      betas=out[..., nj * 6 : nj * 6 + self.num_betas],
      camera=out[..., nj * 6 + self.num_betas :] if self.camera else None,
    )


def rotmats(rot6d_delta):
  """Residual 6D [..., n, 6] -> rotation matrices [..., n, 3, 3]."""
  return rotations.rot6d_to_matrix(IDENTITY_6D + rot6d_delta)


def articulate(model, rot6d_delta, betas, convention="openpose"):
  """(vertices [..., n, 3], keypoints [..., 21, 3], R [..., 16, 3, 3]) in the hand's frame, metres.

  rot6d_delta [..., 15, 6] (the wrist stays the identity) or [..., 16, 6] (wrist first)."""
  R = rotmats(rot6d_delta)
  if R.shape[-3] == 15:
    eye = jnp.broadcast_to(jnp.eye(3, dtype=R.dtype), R.shape[:-3] + (1, 3, 3))
    R = jnp.concatenate([eye, R], axis=-3)
  out = hand.lbs(model, R, betas)
  kp = conventions.keypoints(model, out.vertices, out.joints, convention)
  return out.vertices, kp, R


def place_by_similarity(keypoints, vertices, target):
  """keypoints [..., 21, 3], vertices [..., n, 3] placed by the similarity (no reflection; no
  gradient through it) that best maps the keypoints onto target [..., 21, 3] ->
  (keypoints, vertices, scale [...], R [..., 3, 3])."""
  s, R, t = (
    jax.lax.stop_gradient(a)
    for a in alignment.similarity_transform(keypoints, target, allow_reflection=False)
  )
  place = lambda p: alignment.apply_similarity(p, s, R, t)
  return place(keypoints), place(vertices), s, R


def place_rigid(keypoints, vertices, target):
  """The same with the scale held at 1 (the best rotation and translation): the hand's size
  then comes from its shape coefficients, not from a free per-frame gauge ->
  (keypoints, vertices, scale [...] = 1, R [..., 3, 3])."""
  _, R, _ = alignment.similarity_transform(keypoints, target, allow_reflection=False)
  R = jax.lax.stop_gradient(R)
  rotate = lambda p: jnp.einsum("...ij,...nj->...ni", R, p)
  t = jax.lax.stop_gradient(jnp.mean(target, -2) - jnp.mean(rotate(keypoints), -2))
  place = lambda p: rotate(p) + t[..., None, :]
  return place(keypoints), place(vertices), jnp.ones(R.shape[:-2], R.dtype), R


def weak_perspective(points, camera):
  """points [..., p, 3] (root-relative, metres), camera [..., 3] raw head output -> positions
  [..., p, 2] in crop units. The scale is softplus(raw + c) with softplus(c) = CAMERA_INIT[0]
  per 0.2 m, so an untrained head draws a ~20 cm hand across the crop's middle."""
  c0 = np.log(np.expm1(CAMERA_INIT[0]))
  scale = jax.nn.softplus(camera[..., :1] + c0) / 0.2
  shift = camera[..., 1:] + jnp.asarray(CAMERA_INIT[1:], camera.dtype)
  return scale[..., None, :] * points[..., :2] + shift[..., None, :]
