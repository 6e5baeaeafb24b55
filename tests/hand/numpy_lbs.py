"""A direct, loop-based NumPy MANO forward pass: the reference the kernel is checked against.

Written from the MANO paper's equations, independently of handflow's kernel (4x4 transforms,
per-joint loop, per-vertex blend), on arrays in the official pickle layout.
"""

import numpy as np
from scipy.spatial.transform import Rotation


def mano_forward(arrays, full_pose_aa, betas):
  """full_pose_aa [16, 3] (joint 0 global), betas [10]; returns vertices [778,3], joints [16,3]."""
  parents = arrays["kintree_table"][0].astype(np.int64)
  parents[0] = -1
  v_shaped = arrays["v_template"] + arrays["shapedirs"] @ betas
  j_rest = arrays["J_regressor"] @ v_shaped
  rots = Rotation.from_rotvec(full_pose_aa).as_matrix()
  feat = (rots[1:] - np.eye(3)).reshape(-1)
  v_posed = v_shaped + arrays["posedirs"] @ feat
  world = [None] * 16
  for j in range(16):
    local = np.eye(4)
    local[:3, :3] = rots[j]
    local[:3, 3] = j_rest[j] - (j_rest[parents[j]] if parents[j] >= 0 else 0)
    world[j] = local if parents[j] < 0 else world[parents[j]] @ local
  skin = []
  for j in range(16):
    rest_inv = np.eye(4)
    rest_inv[:3, 3] = -j_rest[j]
    skin.append(world[j] @ rest_inv)
  skin = np.stack(skin)
  out = np.zeros_like(v_posed)
  for i in range(len(v_posed)):
    t = np.tensordot(arrays["weights"][i], skin, axes=1)
    out[i] = t[:3, :3] @ v_posed[i] + t[:3, 3]
  return out, np.stack([w[:3, 3] for w in world])
