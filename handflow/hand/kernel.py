"""The MANO kernel: pure functions of a `HandModel` and arrays.

  rotmats = pose_to_rotmats(model, hand_pose, global_orient, pca=..., flat_hand_mean=...)
  out = lbs(model, rotmats, betas)              # vertices [..., n, 3], joints [..., 16, 3]
  out = forward(model, hand_pose, betas, global_orient, transl)   # both of the above + transl

Any leading batch shape; jit, vmap and grad work. Frames: the model's canonical frame (MANO's
for MANO files; for the open hand: origin at the wrist, x towards the middle finger, y out of the
back of the hand). Units: metres.

Performance: the work is a roofline problem, so every stage is a dense matrix product over the
flattened batch b plus fused elementwise passes, with vertex arrays coordinate-major
([b, 3, n], contiguous rows of n):
  shape + pose blend    [b, s + p] @ [s + p, 3n]           (one GEMM)
  forward kinematics    tree levels, vectorised per level   (4 small steps for MANO)
  skinning              [b*12, 16] @ [16, n]               (one GEMM, the blended 3x4 transforms)
  apply                 x' = A0 x + A1 y + A2 z + t         (elementwise, fused by XLA)
On CPU, large batches run in blocks of CPU_CHUNK meshes so that each block's intermediates stay
in cache (`python -m handflow.bench.mano` measures all of this).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from handflow.hand import rotations
from handflow.hand.model import HandModel

# Meshes per block on CPU (see `lbs`); measured by `python -m handflow.bench.mano`.
CPU_CHUNK = 128


class HandOutput(NamedTuple):
  vertices: jnp.ndarray  # [..., n, 3]
  joints: jnp.ndarray  # [..., 16, 3] posed kinematic joints, MANO order


@functools.cache
def _tree_levels(parents: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
  """Per depth below the root: (joint ids, index of each joint's parent in the level above)."""
  depth = [0] * len(parents)
  for j, p in enumerate(parents):
    if p >= 0:
      if p >= j:
        raise ValueError(f"kinematic tree must list parents before children: {parents}")
      depth[j] = depth[p] + 1
  levels, prev = [], (0,)
  for d in range(1, max(depth) + 1):
    ids = tuple(j for j in range(len(parents)) if depth[j] == d)
    levels.append((ids, tuple(prev.index(parents[j]) for j in ids)))
    prev = ids
  return tuple(levels)


def _take(x, idx, axis=1):
  """Static gather along `axis`; a plain slice when `idx` is a contiguous range."""
  if idx == tuple(range(idx[0], idx[0] + len(idx))):
    return jax.lax.slice_in_dim(x, idx[0], idx[0] + len(idx), axis=axis)
  return jnp.take(x, np.asarray(idx), axis=axis)


def pose_to_rotmats(
  model: HandModel, hand_pose, global_orient=None, *, pca: bool = False, flat_hand_mean: bool = True
):
  """Local joint rotations [..., 16, 3, 3] from MANO's pose parameters.

  hand_pose: [..., 45] axis-angle of the 15 finger joints (MANO order), or [..., c] PCA
    coefficients (c <= 45) when `pca` is set.
  global_orient: [..., 3] axis-angle of the wrist, or None for the identity.
  flat_hand_mean: if False, the pose is relative to the model's `hands_mean` (MANO's default,
    used by FreiHAND and DexYCB labels).
  """
  hand_pose = jnp.asarray(hand_pose)
  if pca:
    c = hand_pose.shape[-1]
    if not 1 <= c <= model.hands_components.shape[0]:
      raise ValueError(f"PCA hand_pose has {c} coefficients; model '{model.name}' allows 1..45")
    hand_pose = hand_pose @ model.hands_components[:c]
  elif hand_pose.shape[-1] != 45:
    raise ValueError(
      f"hand_pose must be [..., 45] axis-angle (15 joints x 3), got shape {hand_pose.shape}"
      " (use pca=True for PCA coefficients)"
    )
  if not flat_hand_mean:
    hand_pose = hand_pose + model.hands_mean
  if global_orient is None:
    global_orient = jnp.zeros(hand_pose.shape[:-1] + (3,), hand_pose.dtype)
  global_orient = jnp.asarray(global_orient)
  if global_orient.shape[-1] != 3:
    raise ValueError(f"global_orient must be [..., 3] axis-angle, got {global_orient.shape}")
  batch = jnp.broadcast_shapes(hand_pose.shape[:-1], global_orient.shape[:-1])
  aa = jnp.concatenate(
    [
      jnp.broadcast_to(global_orient, batch + (3,))[..., None, :],
      jnp.broadcast_to(hand_pose, batch + (45,)).reshape(batch + (15, 3)),
    ],
    axis=-2,
  )
  return rotations.axis_angle_to_matrix(aa)


def _forward_kinematics(parents, rotmats, joints_rest):
  """Posed joint frames, one vectorised step per tree level (MANO: 3 steps of 5 joints).

  Levels are static slices or gathers and are concatenated at the end: scattering each level
  into a [b, j] array costs more than the products themselves on CPU. (Elementwise forms of the
  3x3 products are slower still: their minor axes have size 3.)

  rotmats [b, j, 3, 3] local rotations, joints_rest [b, j, 3].
  Returns (R_world_joint [b, j, 3, 3], joints_posed [b, j, 3]).
  """
  g_r, g_t, order, prev = [rotmats[:, :1]], [joints_rest[:, :1]], [0], (0,)
  for ids, pidx in _tree_levels(parents):
    parent_r, parent_t = _take(g_r[-1], pidx), _take(g_t[-1], pidx)
    rel = _take(joints_rest, ids) - _take(joints_rest, tuple(prev[i] for i in pidx))
    g_t.append(jnp.einsum("bjik,bjk->bji", parent_r, rel) + parent_t)
    g_r.append(parent_r @ _take(rotmats, ids))
    order.extend(ids)
    prev = ids
  inverse = tuple(order.index(j) for j in range(len(parents)))
  return _take(jnp.concatenate(g_r, 1), inverse), _take(jnp.concatenate(g_t, 1), inverse)


def lbs(model: HandModel, rotmats, betas=None, *, chunk_size: int | None = -1) -> HandOutput:
  """Linear blend skinning of the shaped, pose-corrected template.

  rotmats: [..., 16, 3, 3] local joint rotations (joint 0 = global orientation about the
    wrist joint). betas: [..., s] shape coefficients (s = model.num_betas) or None for zeros.
  chunk_size: meshes per block when the flattened batch is larger. On CPU the per-block
    intermediates (blended transforms [chunk, 12, n]) then stay in cache, which is 2-3x faster at
    large batches; accelerators prefer one wide GEMM. -1 picks by backend, None never blocks.
  Returns vertices [..., n, 3] and posed joints [..., 16, 3] in the model frame.
  """
  rotmats = jnp.asarray(rotmats)
  j, n, s = model.num_joints, model.num_vertices, model.num_betas
  if rotmats.shape[-3:] != (j, 3, 3):
    raise ValueError(f"rotmats must be [..., {j}, 3, 3], got {rotmats.shape}")
  if betas is None:
    betas = jnp.zeros(rotmats.shape[:-3] + (s,), rotmats.dtype)
  betas = jnp.asarray(betas)
  if betas.shape[-1] != s:
    raise ValueError(
      f"betas must be [..., {s}] for hand model '{model.name}' ({s} shape directions), "
      f"got {betas.shape}"
    )
  batch = jnp.broadcast_shapes(rotmats.shape[:-3], betas.shape[:-1])
  b = int(np.prod(batch, dtype=np.int64))
  rotmats = jnp.broadcast_to(rotmats, batch + (j, 3, 3)).reshape(b, j, 3, 3)
  betas = jnp.broadcast_to(betas, batch + (s,)).reshape(b, s)
  if chunk_size == -1:
    chunk_size = CPU_CHUNK if jax.default_backend() == "cpu" else None
  if chunk_size and b > chunk_size:
    verts, joints = _blocked(functools.partial(_lbs_flat, model), chunk_size, rotmats, betas)
  else:
    verts, joints = _lbs_flat(model, rotmats, betas)
  return HandOutput(verts.reshape(batch + (n, 3)), joints.reshape(batch + (j, 3)))


@jax.custom_vjp
def _apply(m, v):
  """Blended transforms m [b, 4, 3, n] (columns of R, then t) applied to points v [b, 3, n].

  Returns [b, 3, n]. Forward and backward are both elementwise chains over contiguous rows of n:
  autodiff of the same expression would pad each slice of m to full size in the backward pass
  (12 full-size pads and adds) or reduce over the size-3 coordinate axis, both several times
  slower on CPU (measured by `python -m handflow.bench.mano`).
  """
  return m[:, 0] * v[:, 0, None] + m[:, 1] * v[:, 1, None] + m[:, 2] * v[:, 2, None] + m[:, 3]


def _apply_fwd(m, v):
  return _apply(m, v), (m, v)


def _apply_bwd(res, g):
  m, v = res
  dm = jnp.stack([g * v[:, 0, None], g * v[:, 1, None], g * v[:, 2, None], g], axis=1)
  dv = jnp.stack(
    [m[:, c, 0] * g[:, 0] + m[:, c, 1] * g[:, 1] + m[:, c, 2] * g[:, 2] for c in range(3)], axis=1
  )
  return dm, dv


_apply.defvjp(_apply_fwd, _apply_bwd)


def _blocked(fn, chunk, *xs):
  """fn over [b, ...] arrays in sequential blocks of `chunk` (padding the last one).

  Each block is rematerialised in the backward pass: recomputing it in cache is cheaper than
  storing its [chunk, 12, n] transforms for the whole batch (measured 1.3-1.4x on forward+grad).
  """
  b = xs[0].shape[0]
  pad = -b % chunk
  xs = [jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) for x in xs]
  xs = [x.reshape((-1, chunk) + x.shape[1:]) for x in xs]
  outs = jax.lax.map(lambda args: jax.checkpoint(fn)(*args), xs)
  return [o.reshape((-1,) + o.shape[2:])[:b] for o in outs]


def _lbs_flat(model: HandModel, rotmats, betas):
  """rotmats [b, j, 3, 3], betas [b, s] -> vertices [b, n, 3], joints [b, j, 3]."""
  b, j, n = rotmats.shape[0], model.num_joints, model.num_vertices

  # Blend shapes as one GEMM over [betas, pose features].
  coeffs = betas
  if model.has_pose_blendshapes:
    pose_feat = (rotmats[:, 1:] - jnp.eye(3, dtype=rotmats.dtype)).reshape(b, -1)
    # The barrier keeps this one GEMM: XLA would rewrite dot(concat) into two dots and an add,
    # writing the [b, 3n] output twice.
    coeffs = jax.lax.optimization_barrier(jnp.concatenate([betas, pose_feat], axis=-1))
  v_posed = (coeffs @ model.blenddirs).reshape(b, 3, n) + model.v_template  # [b, 3, n]
  joints_rest = (betas @ model.j_shapedirs).reshape(b, j, 3) + model.j_template

  g_r, g_t = _forward_kinematics(model.parents, rotmats, joints_rest)
  # Skinning transforms map rest-pose points: x' = G_R x + (G_t - G_R J_rest).
  t = g_t - jnp.einsum("bjik,bjk->bji", g_r, joints_rest)
  # Rows: the columns of G_R, then t, each a 3-vector: [b, 4, 3, j] -> [b*12, j].
  a = jnp.concatenate([jnp.swapaxes(g_r, -1, -2), t[:, :, None]], axis=2)
  a = jnp.transpose(a, (0, 2, 3, 1)).reshape(b * 12, j)
  m = (a @ model.weights.T).reshape(b, 4, 3, n)  # blended transforms per vertex
  # Transposed to [b, n, 3] here, while the block is in cache.
  return jnp.swapaxes(_apply(m, v_posed), 1, 2), g_t


def forward(
  model: HandModel,
  hand_pose,
  betas=None,
  global_orient=None,
  transl=None,
  *,
  pca: bool = False,
  flat_hand_mean: bool = True,
  chunk_size: int | None = -1,
) -> HandOutput:
  """MANO forward pass from pose parameters.

  hand_pose: [..., 45] axis-angle (or [..., c] PCA with pca=True); betas: [..., s] or None;
  global_orient: [..., 3] axis-angle about the wrist joint, or None; transl: [..., 3] metres,
  added to every output, or None. chunk_size: see `lbs`.
  """
  rotmats = pose_to_rotmats(model, hand_pose, global_orient, pca=pca, flat_hand_mean=flat_hand_mean)
  out = lbs(model, rotmats, betas, chunk_size=chunk_size)
  if transl is None:
    return out
  transl = jnp.asarray(transl)[..., None, :]
  return HandOutput(out.vertices + transl, out.joints + transl)


def template(model: HandModel, betas=None) -> HandOutput:
  """The shaped, unposed hand (zero pose, flat hand): vertices [..., n, 3], joints [..., 16, 3]."""
  if betas is None:
    return HandOutput(model.v_template.T, model.j_template)
  betas = jnp.asarray(betas)
  n, j = model.num_vertices, model.num_joints
  verts = (betas @ model.shapedirs).reshape(betas.shape[:-1] + (3, n)) + model.v_template
  joints = (betas @ model.j_shapedirs).reshape(betas.shape[:-1] + (j, 3)) + model.j_template
  return HandOutput(jnp.swapaxes(verts, -1, -2), joints)
