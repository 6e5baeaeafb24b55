"""Pinhole cameras: rigid transforms, projection, back-projection, K under image warps.

Conventions (OpenCV, used everywhere in handflow unless a name says otherwise):
- camera frame: x right, y down, z forward (the scene has z > 0); metres.
- `T_cam_world [..., 4, 4]` maps world points into the camera: x_cam = R x_world + t
  (HanCo's `M`, DexYCB's extrinsics). `T_a_b` always maps frame b into frame a.
- `K [..., 3, 3]` maps camera points to pixels: uv = (K x_cam)[:2] / z, with pixel centres at
  integer coordinates (the top-left pixel's centre is (0, 0)).
- OpenGL cameras (HO3D) look down -z with y up: `T_gl_cv = diag(1, -1, -1)`.

Image warps are 2x3 pixel affines `A` (uv_new = A @ [u, v, 1]); `warp_K(K, A)` returns the
intrinsics of the warped image, exact for any affine (crop, resize, in-plane rotation about any
centre, flips), because projection is homogeneous and A's last row is [0, 0, 1]. A rotation
can instead go into the extrinsics (`in_plane_rotation`, `rotate_camera`: the camera frame
turns with the image, which a regressor of camera-frame orientation needs). The affine
helpers compute in NumPy when given NumPy inputs: the input pipeline calls them from tf.data
threads, where eager JAX ops would queue behind the training step on the same device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*arrays):
  """jax.numpy if any input is a JAX array (or tracer), else NumPy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


# OpenCV <-> OpenGL camera frames (its own inverse).
GL_FROM_CV = jnp.diag(jnp.array([1.0, -1.0, -1.0]))


def transform(T_b_a, x_a):
  """Applies T_b_a [..., 4, 4] to points x_a [..., n, 3] -> x_b [..., n, 3] (NumPy in, NumPy
  out: host code keeps float64)."""
  rotated = _xp(T_b_a, x_a).einsum("...ij,...nj->...ni", T_b_a[..., :3, :3], x_a)
  return rotated + T_b_a[..., None, :3, 3]


def invert(T_b_a):
  """Inverse of a rigid transform [..., 4, 4]: returns T_a_b."""
  r = jnp.swapaxes(T_b_a[..., :3, :3], -1, -2)
  t = -jnp.einsum("...ij,...j->...i", r, T_b_a[..., :3, 3])
  return make_transform(r, t)


def make_transform(r, t):
  """[..., 3, 3] rotation and [..., 3] translation -> [..., 4, 4]."""
  top = jnp.concatenate([r, t[..., :, None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], r.dtype), top.shape[:-2] + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def projection_matrix(K, T_cam_world):
  """P = K [R | t]: [..., 3, 4], maps homogeneous world points to homogeneous pixels."""
  return K @ T_cam_world[..., :3, :]


def project(K, x_cam, eps: float = 1e-6):
  """x_cam [..., n, 3] -> (uv [..., n, 2] pixels, depth [..., n]).

  Points with depth <= eps (behind or on the camera plane) get finite, meaningless pixels;
  callers mask them with `depth > eps`.
  """
  depth = x_cam[..., 2]
  safe = jnp.where(depth > eps, depth, eps)
  xy = x_cam[..., :2] / safe[..., None]
  uv = jnp.einsum("...ij,...nj->...ni", K[..., :2, :2], xy) + K[..., None, :2, 2]
  return uv, depth


def world_to_image(K, T_cam_world, x_world):
  """x_world [..., n, 3] -> (uv [..., n, 2], depth [..., n]) in the camera of (K, T_cam_world)."""
  return project(K, transform(T_cam_world, x_world))


def backproject(K, uv, depth):
  """uv [..., n, 2] pixels and depth [..., n] (camera z, metres) -> x_cam [..., n, 3]."""
  uv1 = jnp.concatenate([uv, jnp.ones_like(uv[..., :1])], axis=-1)
  rays = jnp.einsum("...ij,...nj->...ni", jnp.linalg.inv(K), uv1)
  return rays / rays[..., 2:3] * depth[..., None]


def warp_K(K, A):
  """Intrinsics of an image warped by the pixel affine A [..., 2, 3]: K' = [A; 0 0 1] @ K."""
  xp = _xp(K, A)
  bottom = xp.broadcast_to(xp.array([0.0, 0.0, 1.0], K.dtype), A.shape[:-2] + (1, 3))
  return xp.concatenate([A, bottom], axis=-2) @ K


def warp_points(A, uv):
  """Applies the pixel affine A [..., 2, 3] to uv [..., n, 2]."""
  xp = _xp(A, uv)
  return xp.einsum("...ij,...nj->...ni", A[..., :2], uv) + A[..., None, :, 2]


def crop_resize_affine(box, out_size):
  """Pixel affine of cropping `box` = (x0, y0, w, h) [..., 4] and resizing it to `out_size`
  (width, height) pixels, with pixel centres at integers: the crop's corner (x0 - 0.5,
  y0 - 0.5) maps to (-0.5, -0.5). This matches a resampler that reads source pixel
  (u_src, v_src) = A^-1 (u, v) at output pixel centres (u, v) (e.g. tf.raw_ops
  ImageProjectiveTransformV3 with the inverse transform, or cv2.warpAffine with A).
  """
  xp = _xp(box)
  box = xp.asarray(box, xp.float32)
  sx = out_size[0] / box[..., 2]
  sy = out_size[1] / box[..., 3]
  zero = xp.zeros_like(sx)
  row0 = xp.stack([sx, zero, (0.5 - box[..., 0]) * sx - 0.5], -1)
  row1 = xp.stack([zero, sy, (0.5 - box[..., 1]) * sy - 0.5], -1)
  return xp.stack([row0, row1], -2)


def square_crop_affine(center, side, out_size: int):
  """Pixel affine of a square crop of `side` pixels centred at `center` [..., 2] (its edges at
  center -+ side / 2), resized to out_size x out_size."""
  xp = _xp(center, side)
  center = xp.asarray(center, xp.float32)
  side = xp.asarray(side, xp.float32)[..., None]
  box = xp.concatenate([center - side / 2 + 0.5, side, side], -1)
  return crop_resize_affine(box, (out_size, out_size))


def rotation_affine(angle, center):
  """Pixel affine rotating the image by `angle` radians (counter-clockwise as displayed, i.e.
  with y down) about `center` [..., 2]."""
  xp = _xp(angle, center)
  c, s = xp.cos(angle), xp.sin(angle)
  cx, cy = center[..., 0], center[..., 1]
  # With y pointing down, a counter-clockwise rotation on screen is [[c, s], [-s, c]].
  row0 = xp.stack([c, s, cx - c * cx - s * cy], -1)
  row1 = xp.stack([-s, c, cy + s * cx - c * cy], -1)
  return xp.stack([row0, row1], -2)


def in_plane_rotation(angle):
  """The camera-frame rotation R_z [..., 3, 3] about the optical axis that matches
  `rotation_affine(angle, c)`: for K with square pixels and no skew, [rot; 0 0 1] K = K' R_z
  with K' of the same focal length and the principal point moved by the affine."""
  xp = _xp(angle)
  c, s = xp.cos(angle), xp.sin(angle)
  zero, one = xp.zeros_like(c), xp.ones_like(c)
  rows = [xp.stack(r, -1) for r in ((c, s, zero), (-s, c, zero), (zero, zero, one))]
  return xp.stack(rows, -2)


def rotate_camera(R, T_cam_world):
  """The camera turned by R [..., 3, 3] in its own frame: [R 0; 0 1] T_cam_world."""
  xp = _xp(R, T_cam_world)
  return xp.concatenate([R @ T_cam_world[..., :3, :], T_cam_world[..., 3:, :]], -2)


def compose_affine(A2, A1):
  """The affine of applying A1 then A2 ([..., 2, 3] each)."""
  xp = _xp(A2, A1)
  lin = A2[..., :2] @ A1[..., :2]
  t = xp.einsum("...ij,...j->...i", A2[..., :2], A1[..., 2]) + A2[..., 2]
  return xp.concatenate([lin, t[..., None]], -1)


def invert_affine(A):
  """Inverse of a pixel affine [..., 2, 3]."""
  xp = _xp(A)
  lin = xp.linalg.inv(A[..., :2])
  t = -xp.einsum("...ij,...j->...i", lin, A[..., 2])
  return xp.concatenate([lin, t[..., None]], -1)


def opencv_to_opengl(x_cam_cv):
  """Camera-frame points [..., 3] from OpenCV (y down, z forward) to OpenGL (y up, -z forward).
  The conversion is its own inverse. NumPy in, NumPy out."""
  return _xp(x_cam_cv).concatenate([x_cam_cv[..., :1], -x_cam_cv[..., 1:]], axis=-1)


opengl_to_opencv = opencv_to_opengl


def look_at(eye, target, up=(0.0, 1.0, 0.0)):
  """T_cam_world [..., 4, 4] of an OpenCV camera at `eye` [..., 3] looking at `target`.

  The camera's y axis (image down) is as close as possible to -up.
  """
  eye = jnp.asarray(eye, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  up = jnp.broadcast_to(jnp.asarray(up, jnp.float32), eye.shape)
  z = target - eye
  z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  x = jnp.cross(z, -up)
  x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  y = jnp.cross(z, x)
  r = jnp.stack([x, y, z], axis=-2)  # rows: camera axes in world coordinates
  return make_transform(r, -jnp.einsum("...ij,...j->...i", r, eye))
