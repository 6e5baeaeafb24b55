"""Crops of hand images: where the network's square crop goes, what it does to the cameras,
and the photometric augmentation (the input pipeline's per-view geometry, `pipeline`).

  transforms, K', T', A uv_pl, A uv = geometry(uv_pl, conf, uv, K, T, box, in_hw, size, train, seed)
  crops = warp(images, transforms, size)
  crops = normalise(colour_jitter(crops, seed))            # training; evaluation: normalise only

A crop is a square `MARGIN` times the confident pseudo-labels' bounding box (a detector-driven
crop, as on real data), else the dataset's hand box, else the whole image; training draws a
scale in [0.85, 1.25], a shift of up to 10% of the side and an in-plane rotation of up to 45
degrees. The pixel affine A maps input pixels to crop pixels; the rotation goes into the
camera's extrinsics (T' = R_z T) and the scale and shift into its intrinsics, so the crop is an
exact pinhole camera of the same scene (see `pipeline`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from handflow.geometry import cameras

IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet's, for converted backbones
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)
MARGIN = 1.3  # the crop's side over the hand's bounding box


def geometry(uv_pl, conf, uv, K, T, box, in_hw, size, train, rng_seed):
  """Per example (NumPy): the pixel affine A [t, v, 2, 3] from the input crop to the network's
  crop, around the confident pseudo-labels (else the dataset's hand box [t, v, 4] where it
  has one, else the whole input; plus random scale, shift and rotation when training), and
  what it does to the cameras and points: TF's 8-vector of A^-1 (output -> input pixels)
  [t, v, 8], the crop's intrinsics K' and extrinsics T' = R_z T with [A; 0 0 1] K = K' R_z
  (R_z the crop's in-plane rotation; identity without augmentation), A uv_pl (0 where
  missing) and A uv."""
  rng = np.random.default_rng(rng_seed)
  good = conf > 0.3
  none = ~np.any(good, -1)  # no confident detection in a view
  good = np.where(none[..., None], True, good)
  lo = np.where(good[..., None], uv_pl, np.inf).min(-2)
  hi = np.where(good[..., None], uv_pl, -np.inf).max(-2)
  boxed = none & np.isfinite(box).all(-1)
  whole = np.array([0.0, 0.0, in_hw[1] - 1.0, in_hw[0] - 1.0])
  fallback = np.where(boxed[..., None], box, whole)
  lo = np.where(none[..., None], fallback[..., :2], lo)
  hi = np.where(none[..., None], fallback[..., 2:], hi)
  side = np.maximum((hi - lo).max(-1), 8.0) * MARGIN
  ctr = (lo + hi) / 2
  shape = side.shape
  if train:
    side = side * rng.uniform(0.85, 1.25, shape)
    ctr = ctr + rng.uniform(-0.1, 0.1, shape + (2,)) * side[..., None]
    angle = rng.uniform(-np.pi / 4, np.pi / 4, shape)
  else:
    angle = np.zeros(shape)
  # NumPy throughout: eager JAX ops here would wait for the training step (same device).
  crop = cameras.square_crop_affine(ctr, side, size)
  rot = cameras.rotation_affine(
    np.asarray(angle, np.float32), np.full(shape + (2,), (size - 1) / 2, np.float32)
  )
  A = cameras.compose_affine(rot, crop)
  inv = cameras.invert_affine(A).reshape(shape + (6,))
  transforms = np.concatenate([inv, np.zeros(shape + (2,), inv.dtype)], -1)
  uv_pl_out = np.where(conf[..., None] > 0, cameras.warp_points(A, uv_pl), 0.0)
  R_z = cameras.in_plane_rotation(angle)  # [t, v, 3, 3]
  K_out = cameras.warp_K(K, A) @ np.swapaxes(R_z, -1, -2)
  T_out = cameras.rotate_camera(R_z, T)
  f32 = lambda x: np.asarray(x, np.float32)
  return (f32(transforms), f32(K_out), f32(T_out), f32(uv_pl_out), f32(cameras.warp_points(A, uv)))


def warp(images, transforms, size):
  """images [m, h, w, 3] float, transforms [m, 8] (output -> input pixels) -> [m, size, size, 3]."""
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=images,
    transforms=transforms,
    output_shape=[size, size],
    fill_value=0.0,
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )


def colour_jitter(images, seed):
  """Random brightness, contrast and saturation of images [..., h, w, 3] in [0, 1], stateless
  in `seed` (int32 [2])."""
  images = tf.image.stateless_random_brightness(images, 0.15, seed=seed)
  images = tf.image.stateless_random_contrast(images, 0.8, 1.2, seed=seed + 1)
  images = tf.image.stateless_random_saturation(images, 0.8, 1.2, seed=seed + 2)
  return tf.clip_by_value(images, 0.0, 1.0)


def normalise(images):
  """[0, 1] RGB -> the networks' input (ImageNet mean and standard deviation)."""
  return (images - IMAGE_MEAN) / IMAGE_STD


def denormalise(images):
  """The networks' input -> [0, 1] RGB (what the renderers composite over)."""
  return images * IMAGE_STD + IMAGE_MEAN
