"""The hand model: an immutable pytree that the kernel's pure functions take.

One schema serves both model files: the official MANO pickle (user-supplied, converted by
`handflow.hand.mano_file`) and the open hand built from CC0 MakeHuman assets (shipped in
`handflow/hand/assets`). Both are stored as `.npz` with these arrays (n vertices, j = 16 joints,
s shape directions, p pose-blend features: 135 for MANO, 0 for the open hand, f triangles):

  v_template [n, 3]   shapedirs [n, 3, s]   posedirs [n, 3, p]   J_regressor [j, n]
  weights [n, j]      parents [j]           faces [f, 3]         hands_components [45, 45]
  hands_mean [45]     tip_vertex_ids [5] (thumb, index, middle, ring, pinky)
  name, side (strings)
  face_uv [f, 3, 2]   optional: texture coordinates per face corner in [0, 1] (u right, v down;
                      the open hand has them, MANO does not: renders fall back to vertex colour)

Loading lays the arrays out for dense matrix products, coordinate-major (shape and pose blends
as [s, 3*n] / [p, 3*n], the template as [3, n]) so that the skinning runs as one GEMM and an
elementwise pass over contiguous rows (see `kernel.py`), and precomputes the joint regressor
applied to the template and to the shape directions, which is exact because joint regression
is linear in the shaped vertices.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
NUM_JOINTS = 16
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)
ASSETS = pathlib.Path(__file__).parent / "assets"
SIDES = ("right", "left")

REQUIRED_KEYS = (
  "v_template",
  "shapedirs",
  "posedirs",
  "J_regressor",
  "weights",
  "parents",
  "faces",
  "hands_components",
  "hands_mean",
  "tip_vertex_ids",
)


class ModelFileError(ValueError):
  """A hand-model file is missing a key or holds an array of the wrong shape."""


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=[
    "v_template",
    "blenddirs",
    "j_regressor",
    "j_template",
    "j_shapedirs",
    "weights",
    "hands_components",
    "hands_mean",
    "faces",
    "face_uv",
  ],
  meta_fields=["num_betas", "parents", "tip_vertex_ids", "name", "side"],
)
@dataclasses.dataclass(frozen=True, eq=False)
class HandModel:
  """Arrays of one hand model, laid out for the kernel (see module docstring).

  Arrays are pytree leaves (they can be traced or sharded); the kinematic tree, tip ids and
  names are static metadata. `faces` is an int32 leaf: differentiate with respect to the
  inputs of the kernel, not the model.
  """

  v_template: jax.Array  # [3, n], coordinate-major
  blenddirs: jax.Array  # [s + p, 3*n]: shape then pose-blend directions, coordinate-major
  j_regressor: jax.Array  # [j, n]
  j_template: jax.Array  # [j, 3] = J_regressor @ v_template
  j_shapedirs: jax.Array  # [s, j*3] = J_regressor applied to each shape direction
  weights: jax.Array  # [n, j]
  hands_components: jax.Array  # [45, 45], rows are PCA components of the finger pose
  hands_mean: jax.Array  # [45]
  faces: jax.Array  # [f, 3] int32
  num_betas: int
  parents: tuple[int, ...]
  tip_vertex_ids: tuple[int, ...]  # thumb, index, middle, ring, pinky
  name: str
  side: str
  face_uv: jax.Array | None = None  # [f, 3, 2] texture coordinates per face corner, or None

  @property
  def has_uv(self) -> bool:
    return self.face_uv is not None

  @property
  def num_vertices(self) -> int:
    return self.v_template.shape[1]

  @property
  def shapedirs(self) -> jax.Array:  # [s, 3*n]
    return self.blenddirs[: self.num_betas]

  @property
  def posedirs(self) -> jax.Array:  # [p, 3*n], p = 135 (MANO) or 0 (open hand)
    return self.blenddirs[self.num_betas :]

  @property
  def num_joints(self) -> int:
    return len(self.parents)

  @property
  def has_pose_blendshapes(self) -> bool:
    return self.blenddirs.shape[0] > self.num_betas

  @property
  def is_mano_topology(self) -> bool:
    return self.num_vertices == 778 and len(self.faces) == 1538


def _check(cond: bool, source: str, key: str, msg: str):
  if not cond:
    raise ModelFileError(f"{source}: key '{key}': {msg}")


def validate_arrays(arrays: dict, source: str) -> dict[str, np.ndarray]:
  """Checks keys, shapes and values of a hand-model dict; returns float32/int32 copies.

  `source` names the file in every error message.
  """
  missing = [k for k in REQUIRED_KEYS if k not in arrays]
  if missing:
    raise ModelFileError(f"{source}: missing key(s) {missing}; a hand model needs {REQUIRED_KEYS}")
  out = {}
  for k in REQUIRED_KEYS:
    try:
      out[k] = np.asarray(arrays[k])
    except Exception as e:
      kind = type(arrays[k]).__name__
      raise ModelFileError(f"{source}: key '{k}' is not an array ({kind}): {e}") from e
    if out[k].dtype == object or out[k].dtype.kind not in "biuf":
      raise ModelFileError(f"{source}: key '{k}' holds {out[k].dtype}, not numbers")
  n = out["v_template"].shape[0] if out["v_template"].ndim == 2 else -1
  _check(
    out["v_template"].shape == (n, 3) and n > 0,
    source,
    "v_template",
    f"expected [n, 3], got {out['v_template'].shape}",
  )
  parents = out["parents"].astype(np.int64).reshape(-1)
  _check(
    tuple(parents) == MANO_PARENTS,
    source,
    "parents",
    f"expected MANO's kinematic tree {list(MANO_PARENTS)}, got {parents.tolist()}",
  )
  j = NUM_JOINTS
  sd = out["shapedirs"]
  _check(
    sd.ndim == 3 and sd.shape[:2] == (n, 3),
    source,
    "shapedirs",
    f"expected [{n}, 3, s], got {sd.shape}",
  )
  pd = out["posedirs"]
  _check(
    pd.ndim == 3 and pd.shape[:2] == (n, 3) and pd.shape[2] in (0, NUM_POSE_FEATURES),
    source,
    "posedirs",
    f"expected [{n}, 3, {NUM_POSE_FEATURES}] (or [{n}, 3, 0]), got {pd.shape}",
  )
  _check(
    out["J_regressor"].shape == (j, n),
    source,
    "J_regressor",
    f"expected [{j}, {n}], got {out['J_regressor'].shape}",
  )
  w = out["weights"]
  _check(w.shape == (n, j), source, "weights", f"expected [{n}, {j}], got {w.shape}")
  _check(
    bool(np.all(w >= -1e-6)) and np.allclose(w.sum(1), 1.0, atol=1e-3),
    source,
    "weights",
    "skinning weights must be non-negative and sum to 1 per vertex",
  )
  f = out["faces"]
  _check(
    f.ndim == 2 and f.shape[1] == 3 and f.size > 0,
    source,
    "faces",
    f"expected [f, 3], got {f.shape}",
  )
  _check(
    f.dtype.kind in "iu" and f.min() >= 0 and f.max() < n,
    source,
    "faces",
    f"vertex ids must be integers in [0, {n})",
  )
  _check(
    out["hands_components"].shape == (45, 45),
    source,
    "hands_components",
    f"expected [45, 45], got {out['hands_components'].shape}",
  )
  out["hands_mean"] = out["hands_mean"].reshape(-1)
  _check(
    out["hands_mean"].shape == (45,),
    source,
    "hands_mean",
    f"expected [45], got {out['hands_mean'].shape}",
  )
  tips = out["tip_vertex_ids"].reshape(-1)
  _check(
    tips.shape == (5,) and tips.min() >= 0 and tips.max() < n,
    source,
    "tip_vertex_ids",
    f"expected 5 vertex ids in [0, {n}), got {tips.tolist()}",
  )
  if "face_uv" in arrays:
    uv = np.asarray(arrays["face_uv"])
    _check(
      uv.shape == (f.shape[0], 3, 2) and uv.dtype.kind == "f",
      source,
      "face_uv",
      f"expected float texture coordinates [{f.shape[0]}, 3, 2], got {uv.dtype} {uv.shape}",
    )
    in_range = bool(np.all((uv >= 0) & (uv <= 1)))
    _check(in_range, source, "face_uv", "texture coordinates must lie in [0, 1]")
    out["face_uv"] = uv.astype(np.float32)
  for k in out:
    if not np.all(np.isfinite(out[k])):
      raise ModelFileError(f"{source}: key '{k}' contains NaN or inf")
  floats = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "hands_components",
    "hands_mean",
  )
  for k in floats:
    out[k] = out[k].astype(np.float32)
  out["parents"] = parents.astype(np.int32)
  out["faces"] = f.astype(np.int32)
  out["tip_vertex_ids"] = tips.astype(np.int32)
  return out


def from_arrays(arrays: dict, *, name: str, side: str, source: str = "<arrays>") -> HandModel:
  """Builds a HandModel from the file schema, after validation."""
  if side not in SIDES:
    raise ModelFileError(f"{source}: side must be one of {SIDES}, got '{side}'")
  a = validate_arrays(arrays, source)
  n, s = a["v_template"].shape[0], a["shapedirs"].shape[2]
  dirs = ("shapedirs", "posedirs")
  jr = a["J_regressor"].astype(np.float64)
  shapedirs = a["shapedirs"].astype(np.float64)
  return HandModel(
    v_template=jnp.asarray(a["v_template"].T),
    blenddirs=jnp.asarray(
      np.concatenate([np.transpose(a[k], (2, 1, 0)).reshape(-1, 3 * n) for k in dirs])
    ),
    j_regressor=jnp.asarray(a["J_regressor"]),
    j_template=jnp.asarray((jr @ a["v_template"]).astype(np.float32)),
    j_shapedirs=jnp.asarray(
      np.einsum("jn,nds->sjd", jr, shapedirs).reshape(s, -1).astype(np.float32)
    ),
    weights=jnp.asarray(a["weights"]),
    hands_components=jnp.asarray(a["hands_components"]),
    hands_mean=jnp.asarray(a["hands_mean"]),
    parents=tuple(int(p) for p in a["parents"]),
    faces=jnp.asarray(a["faces"]),
    num_betas=s,
    tip_vertex_ids=tuple(int(t) for t in a["tip_vertex_ids"]),
    name=name,
    side=side,
    face_uv=jnp.asarray(a["face_uv"]) if "face_uv" in a else None,
  )


def load_npz(path: str | pathlib.Path) -> HandModel:
  """Loads a hand model `.npz` in handflow's schema (open hand or converted MANO)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"hand model file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:
    raise ModelFileError(f"{path}: not a readable .npz file ({e})") from e
  for k in ("name", "side"):
    if k not in arrays:
      raise ModelFileError(f"{path}: missing key '{k}'")
  return from_arrays(arrays, name=str(arrays["name"]), side=str(arrays["side"]), source=str(path))
