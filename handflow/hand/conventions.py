"""21-keypoint conventions as data: keypoint orders, fingertip vertices, base-joint rule.

A `Convention` fixes how the 21 keypoints are read off a posed hand:
- `order`: the output order. "openpose" (OpenPose / FreiHAND / DexYCB / HanCo / HaMeR):
  wrist, then thumb, index, middle, ring, pinky, each MCP -> tip. "ho3d": MANO's 16 joints
  (wrist; index, middle, pinky, ring, thumb) then the five tips (thumb ... pinky).
- `tip_vertex_ids`: fingertip vertices (thumb, index, middle, ring, pinky) on the MANO
  topology; None takes the model's own tips (the open hand's, or MANO's smplx default).
- `base_joints`: "kinematic" takes the 16 posed kinematic joints; "regressor" applies the joint
  regressor to the posed mesh (FreiHAND's rule).
See REFERENCE §1 for the sources of these numbers.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from handflow.hand.model import HandModel

# Index into [MANO16 joints, tips (thumb, index, middle, ring, pinky)] for each output keypoint.
OPENPOSE_FROM_MANO21 = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
HO3D_FROM_MANO21 = tuple(range(21))
# Index into OpenPose order for each HO3D keypoint (REFERENCE §1).
HO3D_FROM_OPENPOSE = (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20)
ORDERS = {"openpose": OPENPOSE_FROM_MANO21, "ho3d": HO3D_FROM_MANO21}

OPENPOSE_NAMES = ("wrist",) + tuple(
  f"{finger}_{part}"
  for finger in ("thumb", "index", "middle", "ring", "pinky")
  for part in ("mcp", "pip", "dip", "tip")
)
# Parent of each keypoint in OpenPose order (for bones and drawing).
OPENPOSE_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


@dataclasses.dataclass(frozen=True)
class Convention:
  name: str
  order: str
  tip_vertex_ids: tuple[int, ...] | None
  base_joints: str

  def __post_init__(self):
    if self.order not in ORDERS:
      raise ValueError(f"convention {self.name}: unknown order '{self.order}'")
    if self.base_joints not in ("kinematic", "regressor"):
      raise ValueError(f"convention {self.name}: unknown base_joints '{self.base_joints}'")


PRESETS = {
  c.name: c
  for c in (
    Convention("openpose", "openpose", None, "kinematic"),
    Convention("freihand", "openpose", (744, 320, 443, 555, 672), "regressor"),
    Convention("ho3d", "ho3d", (744, 333, 444, 555, 672), "kinematic"),
    Convention("smplx", "openpose", (744, 320, 443, 554, 671), "kinematic"),
    Convention("hamer", "openpose", (744, 320, 443, 554, 671), "kinematic"),
    Convention("manopth", "openpose", (745, 317, 444, 556, 673), "kinematic"),
    Convention("dexycb", "openpose", (745, 317, 444, 556, 673), "kinematic"),
  )
}


def get(name: str | Convention) -> Convention:
  if isinstance(name, Convention):
    return name
  if name not in PRESETS:
    raise ValueError(f"unknown keypoint convention '{name}'; known: {sorted(PRESETS)}")
  return PRESETS[name]


def tip_ids(model: HandModel, convention: Convention) -> tuple[int, ...]:
  """The fingertip vertex ids that `convention` reads on `model`."""
  if convention.tip_vertex_ids is None:
    return model.tip_vertex_ids
  if not model.is_mano_topology:
    raise ValueError(
      f"convention '{convention.name}' names MANO vertex ids, but hand model '{model.name}' has "
      f"{model.num_vertices} vertices (not MANO's 778); use convention 'openpose', which takes "
      "the model's own fingertips"
    )
  return convention.tip_vertex_ids


def keypoints(model: HandModel, vertices, joints, convention: str | Convention = "openpose"):
  """21 keypoints [..., 21, 3] from a posed hand.

  vertices: [..., n, 3] posed mesh; joints: [..., 16, 3] posed kinematic joints (MANO order),
  both in the same frame (the output of `kernel.forward`).
  """
  c = get(convention)
  if c.base_joints == "regressor":
    base = jnp.einsum("jn,...nd->...jd", model.j_regressor, vertices)
  else:
    base = joints
  tips = vertices[..., jnp.asarray(tip_ids(model, c)), :]
  mano21 = jnp.concatenate([base, tips], axis=-2)
  return mano21[..., jnp.asarray(ORDERS[c.order]), :]


def reorder(points, src: str, dst: str):
  """Converts [..., 21, D] keypoints between "openpose" and "ho3d" orders."""
  if src == dst:
    return points
  if (src, dst) == ("openpose", "ho3d"):
    return points[..., jnp.asarray(HO3D_FROM_OPENPOSE), :]
  if (src, dst) == ("ho3d", "openpose"):
    inverse = [HO3D_FROM_OPENPOSE.index(i) for i in range(21)]
    return points[..., jnp.asarray(inverse), :]
  raise ValueError(f"unknown keypoint orders '{src}' -> '{dst}'; known: {sorted(ORDERS)}")
