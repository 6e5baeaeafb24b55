"""The pieces of HandMIM's pre-training objective (REFERENCE §6), pure jnp, one image or a batch.

Views: `random_affines` draws the known maps of two views of each image (crop scale, in-plane
rotation, shift), `warp` renders them. `A [n, 2, 3]` maps a view's pixel (x, y) (pixel centres at
i + 0.5) to the source image's pixel: x_src = A[:, :2] x_view + A[:, 2].
Masks: `block_mask` (BEiT): random rectangles of patches until a sampled ratio is reached.
Losses: `distillation_ce` (iBOT/DINO cross-entropy with a centred, sharpened teacher),
`keypoint_alignment` (the teacher's pseudo keypoints of one view carried into the other through
the two known maps, L1 to the student's), `pixel_targets` + `masked_mse` (MAE's normalised
pixels on masked patches). Schedules: `ema_momentum`, `teacher_temperature`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from handflow.models import sampling

# --- views ------------------------------------------------------------------------------------


def random_affines(key, n: int, size: int, scale=(0.6, 1.0), max_rotation_deg=30.0,
                   max_shift=0.15):  # fmt: skip
  """A [n, 2, 3]: view pixel -> source pixel for square crops of `size` px. A view covers a
  square of side scale * size of the source, rotated by an angle in +-max_rotation_deg about
  its centre, which is shifted by up to max_shift * size from the image centre."""
  k1, k2, k3 = jax.random.split(key, 3)
  s = jax.random.uniform(k1, (n,), minval=scale[0], maxval=scale[1])
  a = jnp.radians(max_rotation_deg) * jax.random.uniform(k2, (n,), minval=-1.0, maxval=1.0)
  shift = max_shift * size * jax.random.uniform(k3, (n, 2), minval=-1.0, maxval=1.0)
  c, sn = jnp.cos(a), jnp.sin(a)
  M = s[:, None, None] * jnp.stack([jnp.stack([c, -sn], -1), jnp.stack([sn, c], -1)], -2)
  centre = jnp.full((n, 2), size / 2.0)
  t = centre + shift - jnp.einsum("nij,nj->ni", M, centre)
  return jnp.concatenate([M, t[..., None]], -1)


def apply_affine(A, points):
  """A [n, 2, 3], points [n, p, 2] -> [n, p, 2]."""
  return jnp.einsum("nij,npj->npi", A[:, :, :2], points) + A[:, None, :, 2]


def invert_affine(A):
  Minv = jnp.linalg.inv(A[:, :, :2])
  return jnp.concatenate([Minv, -jnp.einsum("nij,nj->ni", Minv, A[:, :, 2])[..., None]], -1)


def warp(images, A, size: int):
  """images [n, h, w, c] -> views [n, size, size, c]: view pixel (x, y) reads the source at
  A (x, y) (bilinear; 0 outside, the dataset mean colour for normalised images)."""
  n, h, w, _ = images.shape
  ij = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), -1) + 0.5
  src = apply_affine(A, jnp.broadcast_to(jnp.asarray(ij, A.dtype).reshape(1, -1, 2),
                                         (n, size * size, 2)))  # fmt: skip
  uv = src / jnp.asarray([w, h], A.dtype)
  return sampling.bilinear_sample(images, uv).reshape(n, size, size, -1)


# --- masks ------------------------------------------------------------------------------------


def block_mask(key, grid: int, ratio, min_block: int = 4, aspect=0.3, attempts: int = 64):
  """[grid * grid] bool: BEiT's block masking of a `grid` x `grid` patch grid. Rectangles of at
  least `min_block` patches (aspect ratio log-uniform in (aspect, 1 / aspect)) at random places
  are added while the masked count stays <= round(ratio * grid^2), until it is reached or
  `attempts` rectangles were drawn. `ratio` [] (traced is fine; 0 masks nothing)."""
  total = grid * grid
  target = jnp.round(ratio * total).astype(jnp.int32)
  rows = jnp.arange(grid)[:, None]
  cols = jnp.arange(grid)[None, :]
  lo, hi = np.log(aspect), np.log(1.0 / aspect)

  def body(state):
    mask, count, i, key = state
    key, k1, k2, k3, k4 = jax.random.split(key, 5)
    room = jnp.maximum(target - count, min_block).astype(jnp.float32)
    area = jax.random.uniform(k1, (), minval=min_block, maxval=room + 1e-3)
    ar = jnp.exp(jax.random.uniform(k2, (), minval=lo, maxval=hi))
    bh = jnp.clip(jnp.round(jnp.sqrt(area * ar)), 1, grid).astype(jnp.int32)
    bw = jnp.clip(jnp.round(jnp.sqrt(area / ar)), 1, grid).astype(jnp.int32)
    top = jax.random.randint(k3, (), 0, grid - bh + 1)
    left = jax.random.randint(k4, (), 0, grid - bw + 1)
    block = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    delta = jnp.sum(block & ~mask)
    ok = count + delta <= target
    return jnp.where(ok, mask | block, mask), jnp.where(ok, count + delta, count), i + 1, key

  def cond(state):
    _, count, i, _ = state
    return (count < target) & (i < attempts)

  init = (jnp.zeros((grid, grid), bool), jnp.int32(0), jnp.int32(0), key)
  mask, *_ = jax.lax.while_loop(cond, body, init)
  return mask.reshape(total)


def block_masks(key, n: int, grid: int, ratio_range, prob: float, min_block: int = 4):
  """[n, grid * grid]: each image masked with probability `prob` at a ratio ~ U(ratio_range)."""
  k1, k2, k3 = jax.random.split(key, 3)
  ratio = jax.random.uniform(k1, (n,), minval=ratio_range[0], maxval=ratio_range[1])
  ratio = jnp.where(jax.random.bernoulli(k2, prob, (n,)), ratio, 0.0)
  return jax.vmap(lambda k, r: block_mask(k, grid, r, min_block))(jax.random.split(k3, n), ratio)


# --- losses -----------------------------------------------------------------------------------


def distillation_ce(teacher_logits, student_logits, center, teacher_temp, student_temp):
  """[...]: cross-entropy H(softmax((t - c) / tau_t), softmax(s / tau_s)) over the last axis
  (the teacher is a target: no gradient)."""
  t = jax.nn.softmax((jax.lax.stop_gradient(teacher_logits) - center) / teacher_temp, -1)
  return -jnp.sum(t * jax.nn.log_softmax(student_logits / student_temp, -1), -1)


def keypoint_alignment(kp_teacher, kp_student, A_from, A_to, size: int):
  """[n]: mean L1 (crop units) between the student's pseudo keypoints in view `to` and the
  teacher's keypoints of view `from` [n, k, 2] (crop units, [0, 1] across the view) carried
  through the source image into `to` (A_to^-1 A_from). 0 when the student is equivariant."""
  src = apply_affine(A_from, jax.lax.stop_gradient(kp_teacher) * size)
  target = apply_affine(invert_affine(A_to), src) / size
  return jnp.mean(jnp.abs(kp_student - target), (-2, -1))


def pixel_targets(images, patch: int):
  """images [n, s, s, c] -> per-patch normalised pixels [n, g*g, patch*patch*c] (MAE: each patch
  to zero mean, unit variance)."""
  n, s, _, c = images.shape
  g = s // patch
  x = images.reshape(n, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, g * g, patch * patch * c)
  mean, var = jnp.mean(x, -1, keepdims=True), jnp.var(x, -1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + 1e-6)


def masked_mean(values, mask):
  """values [n, p], mask [n, p] -> [n]: the mean over masked entries (0 where none is)."""
  m = mask.astype(values.dtype)
  return jnp.sum(values * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)


# --- schedules --------------------------------------------------------------------------------


def ema_momentum(step, num_steps: int, base: float):
  """The teacher's momentum: `base` at step 0 rising to 1 at `num_steps` on a half cosine."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(num_steps, 1), 0.0, 1.0)
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0


def teacher_temperature(step, warmup: int, start: float, end: float):
  """Linear warm-up from `start` to `end` over `warmup` steps, then `end`."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(warmup, 1), 0.0, 1.0)
  return start + (end - start) * frac


def ema_update(teacher, student, momentum):
  return jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s, teacher, student)
