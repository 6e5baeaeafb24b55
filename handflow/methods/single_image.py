"""What every single-image MANO regressor (CycleHand, HandMIM) shares: placing the regressed hand
in the camera, its outputs, its supervision and its labelled subset. Pure jnp over
`data.single_view` batches ([b, 1, 1, ...], one image each; n = b images below).

- `place(model, mano, K, size, convention)`: ManoParams (rot6d [n, 16, 6] with the wrist's
  camera-frame orientation first, raw betas, a weak-perspective camera) -> `Placed` hand in the
  camera frame (metres). The camera's scale and root position (crop units) become a root depth
  f / (crop size x scale) through the crop's intrinsics K, so the hand sits in true perspective.
- `outputs(placed, K, batch, side)`: `Method.predict`'s dict (world and camera frames, 2D, the
  camera-palm angle).
- `supervised_terms(...)`: per-image losses against the ground truth: root-relative 3D
  keypoints and vertices (cm), 2D keypoints (smooth L1, crop units), joint rotations and shape
  when the dataset's parameters are the model's own.
- `labelled(batch, fraction, seed, cone, side)`: the images whose labels a loss may read.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.data import subsets
from handflow.geometry import cameras, viewpoint
from handflow.hand import rotations
from handflow.methods import cyclehand_losses as cl
from handflow.methods import losses
from handflow.models import mano_head

# Shape coefficients are bounded (tanh): early on, with the pose still wrong, the 3D loss
# otherwise shrinks or stretches the hand to extreme shapes to hedge.
BETA_MAX = 3.0
DEPTH_RANGE_M = (0.05, 5.0)  # the root's camera depth
SUPERVISED_TERMS = ("sup3d", "sup_root", "sup2d", "sup_verts", "sup_pose", "sup_shape")


def check_batch(batch, title: str, labels: bool, error=ValueError):
  """A single-image method's first batch: single images (`image_id`) and, when it reads labels,
  the ground truth (`data.supervised`); else `error` with the config key to set."""
  if labels and "xyz" not in batch:
    raise error(
      f"{title} reads labels but the training batches carry none: set "
      "config.data.supervised=True (only the labelled subset is read)"
    )
  if "image_id" not in batch:
    raise error(f"{title} reads single images: set config.data.single_view=True")


def bounded_betas(raw):
  """The shape coefficients the hand uses: BETA_MAX tanh(raw / BETA_MAX)."""
  return BETA_MAX * jnp.tanh(raw / BETA_MAX)


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["verts", "joints", "R", "root", "betas"],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class Placed:
  """One hand per image, camera frame (metres)."""

  verts: jax.Array  # [n, v, 3]
  joints: jax.Array  # [n, 21, 3]
  R: jax.Array  # [n, 16, 3, 3]: the wrist's camera-frame orientation, then the finger joints
  root: jax.Array  # [n, 3]
  betas: jax.Array  # [n, nb] bounded


def place(model, mano: mano_head.ManoParams, K, size: int, convention="openpose") -> Placed:
  """The regressed hand in each image's camera frame (K [n, 3, 3] of the `size` px crop)."""
  betas = bounded_betas(mano.betas)
  verts, kp, R = mano_head.articulate(model, mano.rot6d_delta, betas, convention)
  c0 = np.log(np.expm1(mano_head.CAMERA_INIT[0]))
  scale = jax.nn.softplus(mano.camera[:, 0] + c0) / 0.2  # crop units per metre
  uv = (mano.camera[:, 1:] + jnp.asarray(mano_head.CAMERA_INIT[1:])) * size - 0.5
  # Bounded: an image without labels may otherwise drive the scale towards 0 (metres away).
  depth = jnp.clip(K[:, 0, 0] / (size * scale), DEPTH_RANGE_M[0], DEPTH_RANGE_M[1])
  root = cameras.backproject(K, uv[:, None], depth[:, None])[:, 0]
  kp_root = kp[:, :1]
  return Placed(verts - kp_root + root[:, None], kp - kp_root + root[:, None], R, root, betas)


def outputs(h: Placed, K, batch, side: str) -> dict:
  """joints [b, t, 21, 3] / vertices [b, t, n, 3] in the world frame (single view: view 0's
  `T_cam_world` inverted), their camera-frame versions `joints_cam`, `vertices_cam`, the 2D
  keypoints `uv` [b, t, v, 21, 2] (crop pixels) and the palm angle `view_angle` [b, t]."""
  lead = batch["images"].shape[:3]
  T_wc = cameras.invert(batch["T_cam_world"].reshape(-1, 4, 4))
  world = lambda x: cameras.transform(T_wc, x)
  uv, _ = cameras.project(K, h.joints)
  b, t = lead[0], lead[1] * lead[2]
  return {
    "joints": world(h.joints).reshape(b, t, 21, 3),
    "vertices": world(h.verts).reshape(b, t, -1, 3),
    "joints_cam": h.joints.reshape(b, t, 21, 3),
    "vertices_cam": h.verts.reshape(b, t, -1, 3),
    "uv": uv.reshape(lead + (21, 2)),
    "view_angle": viewpoint.palm_angle(h.joints, side).reshape(b, t),
  }


def gt_cam(batch, key="xyz"):
  """Ground-truth keypoints (or `key="verts"`: vertices) in the camera frame [n, p, 3]."""
  x = batch[key]
  n = int(np.prod(batch["images"].shape[:3]))
  T = batch["T_cam_world"].reshape(n, 4, 4)
  return cameras.transform(T, x.reshape(n, -1, 3))


def gt_rotations(batch):
  """Ground-truth joint rotations [n, 16, 3, 3]: the wrist's in the camera frame, then the
  local finger rotations (the synthetic data's pose parameters)."""
  n = batch["images"].shape[0]
  local = rotations.axis_angle_to_matrix(batch["hand_pose"].reshape(n, 15, 3))
  glob = rotations.axis_angle_to_matrix(batch["global_orient"].reshape(n, 3))
  R_cw = batch["T_cam_world"].reshape(n, 4, 4)[:, :3, :3]
  return jnp.concatenate([(R_cw @ glob)[:, None], local], 1)


def gt_vertices(model, batch):
  """Ground-truth vertices [n, v, 3] in the camera frame: the dataset's meshes (`verts`), or
  the model's forward pass on the data's own parameters (`data.pose_labels` on synthetic
  data, whose hand is the model); None when the batch has neither."""
  if "verts" in batch:
    return gt_cam(batch, "verts")
  if "hand_pose" not in batch or model.is_mano_topology:
    return None
  n = batch["images"].shape[0]
  out = hand.forward(
    model,
    batch["hand_pose"].reshape(n, -1),
    batch["betas"].reshape(n, -1),
    global_orient=batch["global_orient"].reshape(n, 3),
    transl=batch["transl"].reshape(n, 3),
  )
  T = batch["T_cam_world"].reshape(n, 4, 4)
  return cameras.transform(T, out.vertices)


def labelled(batch, fraction: float, seed: int, cone: float = 0.0, side: str = "right"):
  """[n] float: the images whose labels a loss may read (and real, not padding): a fixed share
  `fraction` by a hash of `image_id`, within `cone` degrees of the palm's normal when > 0."""
  n = batch["images"].shape[0]
  sel = subsets.labelled_mask(batch["image_id"].reshape(-1), fraction, seed)
  if cone > 0:
    sel = sel & (viewpoint.palm_angle(gt_cam(batch), side) <= cone)
  return sel.astype(jnp.float32) * batch["mask"].reshape(n)


def heatmap_term(log_heatmap, batch, size: int):
  """[n]: cross-entropy of 2D keypoint heatmaps [n, h, w, 21] against Gaussians (one cell std)
  at the ground-truth keypoints (pixel centres at (i + 0.5) / size in crop units, as `place`)."""
  n = log_heatmap.shape[0]
  u = (batch["uv"].reshape(n, 21, 2) + 0.5) / size
  return jnp.mean(losses.heatmap_cross_entropy(log_heatmap, u), -1)


def supervised_terms(model, h: Placed, K, size: int, batch, names=SUPERVISED_TERMS) -> dict:
  """{name: [n]} for the `names` the batch can supervise: "sup3d" root-relative keypoints (cm,
  L1), "sup_root" the root's camera-frame position (cm, L1), "sup2d" keypoints in the image
  (smooth L1, crop units), "sup_verts" root-relative vertices (cm, L1; the dataset's meshes or
  the model on the data's parameters), "sup_pose" joint rotations (squared Frobenius) and
  "sup_shape" (when the data carries the model's own parameters)."""
  n = h.joints.shape[0]
  out = {}
  if "sup3d" in names:
    out["sup3d"] = cl.joint_l1_cm(h.joints, gt_cam(batch))
  if "sup_root" in names:
    # Without it nothing pins the depth: the 2D term alone is lowest, while the pose is still
    # wrong, for a hand shrunk to a dot far away (and the shape pushed to its bound).
    out["sup_root"] = jnp.sum(jnp.abs(h.root - gt_cam(batch)[:, 0]), -1) / cl.CM
  if "sup2d" in names:
    uv, _ = cameras.project(K, h.joints)
    out["sup2d"] = jnp.mean(losses.smooth_l1((uv - batch["uv"].reshape(n, 21, 2)) / size), -1)
  own = "hand_pose" in batch and not model.is_mano_topology
  gt_v = gt_vertices(model, batch) if "sup_verts" in names else None
  if gt_v is not None and gt_v.shape[1] == h.verts.shape[1]:
    rel = lambda v, j: v - j[:, :1]
    err = jnp.mean(jnp.linalg.norm(rel(h.verts, h.joints) - rel(gt_v, gt_cam(batch)), axis=-1), -1)
    has = batch["has_verts"].reshape(n).astype(err.dtype) if "has_verts" in batch else 1.0
    out["sup_verts"] = err / cl.CM * has
  if "sup_pose" in names and own:
    out["sup_pose"] = jnp.mean(cl.rotation_l2(h.R, gt_rotations(batch)), -1)
  if "sup_shape" in names and own:
    out["sup_shape"] = jnp.mean((h.betas - batch["betas"].reshape(n, -1)) ** 2, -1)
  return out
