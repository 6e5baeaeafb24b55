"""Synthetic multi-view hand clips with exact ground truth (the embedded default dataset).

One clip = T frames of one hand seen by V calibrated cameras:
- hand: the open hand model (or MANO), random shape (betas ~ N(0, 0.8^2), clipped to +-2),
  poses at two keyframes within per-joint limits (flexion, abduction; every joint on its own,
  or from a synergy prior, `random_pose`), interpolated smoothly over the clip, a random global
  orientation that drifts slowly, a small translation;
- rig: V cameras on a sphere around the hand (HanCo-like: 0.45-0.65 m away, evenly spread
  directions with jitter), OpenCV frame, fixed during the clip;
- images: per view and frame a square crop around the hand, rendered directly through the
  cropped intrinsics (`cameras.warp_K`, so 2D keypoints and images agree exactly), Lambert
  shading of a skin tone with low-frequency variation, ambient + point light, composited over a
  procedural background (gradients, blobs, stripes); optional occluders (discs in front);
- labels: 3D keypoints (world, OpenPose order), 2D keypoints per crop, visibility per keypoint
  and view (inside the crop, not behind the surface, not under an occluder), pose and shape
  parameters, K per frame and view, T_cam_world per frame and view, and the hand's mask per
  view (its rendered pixels not under an occluder; what photometric losses compare on).
Everything is a function of a seed (NumPy PCG64 for the scene, jax.random for textures), so a
clip is the same bytes every time.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from handflow import hand
from handflow.geometry import cameras
from handflow.hand import conventions, limits
from handflow.render import raster, shading

# Skin tones (sRGB in [0, 1]), light to dark (Fitzpatrick-like I-VI).
SKIN_TONES = np.array(
  [
    [0.96, 0.80, 0.69],
    [0.90, 0.71, 0.58],
    [0.80, 0.60, 0.46],
    [0.67, 0.47, 0.34],
    [0.49, 0.33, 0.23],
    [0.33, 0.22, 0.15],
  ],
  np.float32,
)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  frames: int = 4
  views: int = 8
  image_size: int = 128
  hand_model: str = "open"
  occluder_rate: float = 0.15  # probability per view and frame of an occluding disc
  crop_margin: float = 1.3  # crop side / hand bounding-box side
  visibility_tol_m: float = 0.015  # keypoints are inside the hand: depth slack
  pose_prior: str = "independent"  # `random_pose`: "independent" or "synergy"

  def __post_init__(self):
    if self.frames < 1 or self.views < 2:
      raise ValueError(f"need frames >= 1 and views >= 2, got {self.frames}, {self.views}")
    if not 32 <= self.image_size <= 256:
      raise ValueError(f"image_size must be in [32, 256], got {self.image_size}")
    if self.pose_prior not in POSE_PRIORS:
      raise ValueError(
        f"pose_prior must be one of {POSE_PRIORS}, got {self.pose_prior!r} (config.data.pose_prior)"
      )


# Each finger's share of the hand's spread (positive abduction moves a finger towards the
# thumb), MANO order: index, middle, pinky, ring.
_SPREAD = (1.0, 0.2, -1.0, -0.5)
POSE_PRIORS = ("independent", "synergy")


def random_pose(rng, axes, side="right", prior="independent"):
  """A hand pose [45] (MANO order, axis-angle) within the joint limits.

  prior "synergy": real hands move in few coordinated patterns (the reason MANO's pose space is
  a PCA; Santello et al. 1998): a closure g ~ U(0, 1) shared by every finger (open hand to
  fist), each finger at g + N(0, 0.15) or, with probability 0.3, at its own U(0, 1) (pointing,
  pinching, counting), its three joints flexed by that fraction of their range with 0.1 rad of
  joint noise, and a spread shared by the fingers that fades as they close. Most of the
  articulation then lies in a few visible directions. "independent" (the default, the data every
  result in the README was measured on): every joint drawn on its own within its limits, about
  30 degrees of freedom of similar size. On the CycleHand regressor (3,000 supervised steps, seed
  0) the synergy data gave an articulation spread of 4.2 mm against its ground truth's 17.3
  (test PA-MPJPE 16.9 against its constant's 17.0), the independent data 1.6 against 14.3
  (14.5 against 14.3): more is learnt, not enough to change the default's conclusions.
  """
  lim = limits.joint_limits()
  pose = np.zeros((15, 3))
  if prior == "independent":
    for k, (lo, hi, abd) in enumerate(lim):
      flex_axis, abd_axis = axes[k][0], axes[k][1]
      # Negative rotation about the flexion axis curls towards the palm.
      flex = rng.uniform(lo, hi) * rng.choice([1.0, rng.uniform(0.2, 1.0)])
      pose[k] = -flex * flex_axis + rng.uniform(-abd, abd) * abd_axis
  elif prior == "synergy":
    closure, spread = rng.uniform(), rng.uniform(-0.3, 1.0)
    for finger in range(5):
      c = rng.uniform() if rng.uniform() < 0.3 else closure + rng.normal(0, 0.15)
      c = float(np.clip(c, 0.0, 1.0))
      for k in range(3 * finger, 3 * finger + 3):
        lo, hi, abd_max = lim[k]
        flex = np.clip(max(lo, 0.0) + c * (hi - max(lo, 0.0)) + rng.normal(0, 0.1), lo, hi)
        if finger < 4:
          abd = spread * _SPREAD[finger] * (1.0 - c) + rng.normal(0, 0.2)
        else:  # the thumb's abduction (opposition) is its own
          abd = rng.uniform(-1.0, 1.0)
        pose[k] = -flex * axes[k][0] + np.clip(abd, -1.0, 1.0) * abd_max * axes[k][1]
  else:
    raise ValueError(f"pose prior must be one of {POSE_PRIORS}, got {prior!r}")
  if side == "left":
    pose *= [-1.0, -1.0, 1.0]
  return pose.reshape(45)


def _rig(rng, views):
  """Camera centres [v, 3] on a sphere around the origin, evenly spread with jitter."""
  k = np.arange(views) + 0.5
  polar = np.arccos(1 - 2 * k / views)  # Fibonacci sphere
  azim = np.pi * (1 + 5**0.5) * k + rng.uniform(0, 2 * np.pi)
  d = np.stack([np.sin(polar) * np.cos(azim), np.cos(polar), np.sin(polar) * np.sin(azim)], -1)
  d = d + rng.normal(0, 0.08, d.shape)
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  return d * rng.uniform(0.45, 0.65, (views, 1))


@functools.partial(jax.jit, static_argnames=("size",))
def _background(key, size):
  """A procedural background [size, size, 3]: gradient, blobs and stripes."""
  k = jax.random.split(key, 6)
  yy, xx = jnp.meshgrid(jnp.linspace(0, 1, size), jnp.linspace(0, 1, size), indexing="ij")
  c0, c1 = jax.random.uniform(k[0], (2, 3))
  angle = jax.random.uniform(k[1], (), maxval=2 * jnp.pi)
  t = jnp.clip(0.5 + (xx - 0.5) * jnp.cos(angle) + (yy - 0.5) * jnp.sin(angle), 0, 1)[..., None]
  img = c0 * (1 - t) + c1 * t
  centres = jax.random.uniform(k[2], (6, 2))
  radii = jax.random.uniform(k[3], (6,), minval=0.05, maxval=0.3)
  colours = jax.random.uniform(k[4], (6, 3))
  for i in range(6):
    d2 = (xx - centres[i, 0]) ** 2 + (yy - centres[i, 1]) ** 2
    a = jnp.exp(-d2 / (2 * radii[i] ** 2))[..., None] * 0.6
    img = img * (1 - a) + colours[i] * a
  freq, phase, amp = jax.random.uniform(k[5], (3,)) * jnp.asarray([20.0, 6.28, 0.15])
  img = img + amp * jnp.sin(freq * (xx + yy) * 3.0 + phase)[..., None]
  return jnp.clip(img, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size", "tiers"))
def _render_views(verts_cam, faces, K, albedo, light_cam, ambient, diffuse, bg, size, tiers=None):
  """verts_cam [m, n, 3], K [m, 3, 3], albedo [n, 3], light_cam [m, 3], bg [m, s, s, 3]
  -> (images [m, s, s, 3] in [0, 1], depth [m, s, s], overflow [m])."""

  def one(v, k, light, b):
    frags = raster.rasterize(v, faces, k, (size, size), tiers=tiers)
    img = shading.shade_hard(frags, v, faces, albedo, light, b, ambient=ambient, diffuse=diffuse)
    return img, frags.depth, frags.overflow

  return jax.vmap(one)(verts_cam, K, light_cam, bg)


def render_all(verts_cam, faces, K, albedo, light_cam, ambient, diffuse, bg, size):
  """_render_views with the default tiers; views where faces overflowed their windows (a hand
  seen end-on fills its crop with large faces) are re-rendered one at a time with 2x, 4x wider
  windows, then densely, so that no face is ever clipped."""
  images, depth, overflow = (
    np.array(x)
    for x in _render_views(verts_cam, faces, K, albedo, light_cam, ambient, diffuse, bg, size)
  )
  base = raster.tiers_for((size, size))
  for i in np.flatnonzero(overflow):
    for scale in (2, 4, None):
      tiers = ((size, 1.0),) if scale is None else tuple((w * scale, f) for w, f in base)
      img, d, ov = _render_views(
        verts_cam[i : i + 1],
        faces,
        K[i : i + 1],
        albedo,
        light_cam[i : i + 1],
        ambient,
        diffuse,
        bg[i : i + 1],
        size,
        tiers,
      )
      if int(ov[0]) == 0:
        images[i], depth[i], overflow[i] = img[0], d[0], 0
        break
  return images, depth


@functools.cache
def _load_model(name: str):
  """The hand model, loaded once per process (a dataset build generates many clips)."""
  return hand.load(name, "right")


def generate_clip(seed, config: SceneConfig = SceneConfig(), model=None):
  """One clip as a dict of NumPy arrays (see the module docstring); deterministic in `seed`."""
  c = config
  model = model if model is not None else _load_model(c.hand_model)
  rng = np.random.default_rng(np.asarray(seed, np.int64).tolist())
  t_, v_, s = c.frames, c.views, c.image_size
  axes = limits.joint_axes(model)
  # Pose keyframes, smooth interpolation (ease in-out) over the clip.
  p0, p1 = (random_pose(rng, axes, prior=c.pose_prior) for _ in range(2))
  w = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, t_)) if t_ > 1 else np.zeros(1)
  pose = (1 - w)[:, None] * p0 + w[:, None] * p1  # [t, 45]
  r0 = Rotation.random(random_state=rng.integers(2**31))
  drift = Rotation.from_rotvec(rng.normal(size=3) * 0.15)
  orient = Slerp([0.0, 1.0], Rotation.concatenate([r0, drift * r0]))(w if t_ > 1 else [0.0])
  global_orient = orient.as_rotvec()  # [t, 3]
  betas = np.clip(rng.normal(0, 0.8, model.num_betas), -2, 2)
  transl = rng.normal(0, 0.01, (t_, 3)) + rng.normal(0, 0.02, 3)
  out = hand.forward(
    model,
    jnp.asarray(pose, jnp.float32),
    jnp.asarray(betas, jnp.float32),
    jnp.asarray(global_orient, jnp.float32),
    jnp.asarray(transl, jnp.float32),
  )
  verts_w = np.asarray(out.vertices)  # [t, n, 3] world
  xyz = np.asarray(conventions.keypoints(model, out.vertices, out.joints, "openpose"))  # [t, 21, 3]
  centre = xyz.mean(axis=(0, 1))
  T_cw = np.asarray(cameras.look_at(centre + _rig(rng, v_), np.broadcast_to(centre, (v_, 3))))
  T_cw = np.broadcast_to(T_cw, (t_, v_, 4, 4)).copy()
  verts_c = np.asarray(cameras.transform(jnp.asarray(T_cw), jnp.asarray(verts_w)[:, None]))
  xyz_c = np.asarray(cameras.transform(jnp.asarray(T_cw), jnp.asarray(xyz)[:, None]))
  # Square crops around the hand's projection in a nominal 600 px camera.
  f = 600.0
  K_full = np.array([[f, 0, 0], [0, f, 0], [0, 0, 1.0]], np.float32)
  uv_full = verts_c[..., :2] / verts_c[..., 2:3] * f
  lo, hi = uv_full.min(-2), uv_full.max(-2)
  side = (hi - lo).max(-1) * c.crop_margin * rng.uniform(0.95, 1.15, (t_, v_))
  ctr = (lo + hi) / 2 + rng.normal(0, 0.04, (t_, v_, 2)) * side[..., None]
  A = np.asarray(cameras.square_crop_affine(jnp.asarray(ctr), jnp.asarray(side), s))
  K = np.asarray(cameras.warp_K(jnp.asarray(K_full), jnp.asarray(A)))  # [t, v, 3, 3]
  uv, depth_kp = cameras.project(jnp.asarray(K), jnp.asarray(xyz_c))
  uv, depth_kp = np.asarray(uv), np.asarray(depth_kp)
  # Appearance.
  tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
  noise = rng.normal(0, 1, (model.num_vertices, 3)) * 0.04 + rng.normal(0, 0.03, 3)
  albedo = np.clip(tone + noise, 0, 1).astype(np.float32)
  light_w = centre + rng.normal(0, 1, 3) * 0.5 + np.array([0, 0.6, 0])
  light_c = np.asarray(
    cameras.transform(jnp.asarray(T_cw), jnp.broadcast_to(jnp.asarray(light_w), (t_, v_, 1, 3)))
  )[..., 0, :]
  keys = jax.random.split(jax.random.key(int(rng.integers(2**31))), t_ * v_)
  bg = jax.vmap(lambda k: _background(k, s))(keys)
  images, depth = render_all(
    jnp.asarray(verts_c.reshape(t_ * v_, -1, 3), jnp.float32),
    model.faces,
    jnp.asarray(K.reshape(-1, 3, 3)),
    jnp.asarray(albedo),
    jnp.asarray(light_c.reshape(-1, 3), jnp.float32),
    float(rng.uniform(0.25, 0.5)),
    float(rng.uniform(0.5, 0.9)),
    bg,
    s,
  )
  images = images.reshape(t_, v_, s, s, 3)
  depth = depth.reshape(t_, v_, s, s)
  hand_mask = depth > 0
  # Visibility: in the crop, not behind the rendered surface.
  px = np.clip(np.round(uv).astype(int), 0, s - 1)
  inside = np.all((uv >= -0.5) & (uv <= s - 0.5), -1)
  surface = np.take_along_axis(depth.reshape(t_, v_, -1), (px[..., 1] * s + px[..., 0]), -1)
  visible = inside & ((surface == 0) | (depth_kp <= surface + c.visibility_tol_m))
  # Occluders: discs in front of the hand.
  occ = rng.random((t_, v_)) < c.occluder_rate
  yy, xx = np.mgrid[0:s, 0:s]
  for ti, vi in zip(*np.nonzero(occ), strict=True):
    cx, cy = uv[ti, vi, rng.integers(21)] + rng.normal(0, s * 0.05, 2)
    r = rng.uniform(0.08, 0.2) * s
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    images[ti, vi][disc] = rng.uniform(0, 1, 3)
    hand_mask[ti, vi] &= ~disc
    visible[ti, vi] &= ~(((uv[ti, vi, :, 0] - cx) ** 2 + (uv[ti, vi, :, 1] - cy) ** 2) <= r * r)
  return {
    "images": np.round(images * 255).astype(np.uint8),
    "hand_mask": hand_mask,
    "K": K.astype(np.float32),
    "T_cam_world": T_cw.astype(np.float32),
    "xyz": xyz.astype(np.float32),
    "uv": uv.astype(np.float32),
    "visible": visible,
    "hand_pose": pose.astype(np.float32),
    "global_orient": global_orient.astype(np.float32),
    "transl": transl.astype(np.float32),
    "betas": betas.astype(np.float32),
  }
