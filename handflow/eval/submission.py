"""Official submission files: writers and readers.

- FreiHAND `pred.json`: `[xyz, verts]`, per evaluation sample a 21 x 3 list (OpenPose order)
  and a 778 x 3 list (MANO vertices), metres, OpenCV camera frame; 3,960 samples.
- HO3D `pred.json`: the same structure, in HO3D order and the OpenGL camera frame (-z in front);
  11,524 samples (v2) or 20,137 (v3). The writer refuses predictions in the OpenCV frame.
- DexYCB result text: one line per image, `index,x1,y1,z1,...,x21,y21,z21`, millimetres,
  camera frame, OpenPose order (REFERENCE §2).
Files are written atomically (a temporary file renamed into place): a failed write leaves no
half-written file. Readers return metres.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from handflow import files

OFFICIAL_SIZES = {"freihand": 3960, "ho3d_v2": 11524, "ho3d_v3": 20137}


def _check(joints, verts, benchmark, allow_subset):
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[1:] != (21, 3):
    raise ValueError(f"{benchmark}: joints must be [samples, 21, 3], got {joints.shape}")
  if not np.isfinite(joints).all():
    bad = np.flatnonzero(~np.isfinite(joints).all(axis=(1, 2)))
    raise ValueError(f"{benchmark}: NaN or inf joints in samples {bad[:5].tolist()}")
  expected = OFFICIAL_SIZES.get(benchmark)
  if expected and len(joints) != expected and not allow_subset:
    raise ValueError(
      f"{benchmark}'s evaluation set has {expected:,} samples, got {len(joints):,} "
      "(pass allow_subset=True to write a partial file)"
    )
  if verts is not None:
    verts = np.asarray(verts, np.float64)
    if verts.shape != (len(joints), 778, 3):
      raise ValueError(
        f"{benchmark}: vertices must be MANO's [samples, 778, 3], got {verts.shape} (the "
        "official scorers compare MANO meshes: predict with a MANO model file)"
      )
    if not np.isfinite(verts).all():
      raise ValueError(f"{benchmark}: NaN or inf vertices")
  return joints, verts


def write_freihand(path, joints, verts, *, allow_subset=False):
  """joints [3960, 21, 3] (OpenPose order), verts [3960, 778, 3], metres, camera frame."""
  joints, verts = _check(joints, verts, "freihand", allow_subset)
  if verts is None:
    raise ValueError("freihand: pred.json needs vertices as well as joints")
  files.write_text_atomic(
    path, json.dumps([np.round(joints, 6).tolist(), np.round(verts, 6).tolist()])
  )


def write_ho3d(path, joints, verts, *, version: int = 2, allow_subset=False):
  """joints [n, 21, 3] in HO3D order and verts [n, 778, 3], metres, OpenGL camera frame."""
  name = f"ho3d_v{version}"
  joints, verts = _check(joints, verts, name, allow_subset)
  if verts is None:
    raise ValueError(f"{name}: pred.json needs vertices as well as joints")
  if np.mean(joints[..., 2] > 0) > 0.5:
    raise ValueError(
      f"{name}: most joints have z > 0 (OpenCV camera frame); HO3D expects the OpenGL frame "
      "(z < 0): convert with handflow.geometry.cameras.opencv_to_opengl"
    )
  files.write_text_atomic(
    path, json.dumps([np.round(joints, 6).tolist(), np.round(verts, 6).tolist()])
  )


def write_dexycb(path, joints, indices=None):
  """joints [n, 21, 3] metres (OpenPose order, camera frame) -> the DexYCB result text (mm)."""
  joints, _ = _check(joints, None, "dexycb", True)
  indices = np.arange(len(joints)) if indices is None else np.asarray(indices)
  if len(indices) != len(joints):
    raise ValueError(f"dexycb: {len(indices)} indices for {len(joints)} predictions")
  lines = [
    ",".join([str(int(i))] + [f"{v:.4f}" for v in (j * 1000.0).reshape(-1)])
    for i, j in zip(indices, joints, strict=True)
  ]
  files.write_text_atomic(path, "\n".join(lines) + "\n")


def read_json_pair(path) -> tuple[np.ndarray, np.ndarray | None]:
  """A FreiHAND/HO3D-style `[xyz, verts]` JSON -> (joints [n, 21, 3], verts [n, v, 3] or None)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  try:
    data = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(
      f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
    ) from None
  if not (isinstance(data, list) and len(data) == 2):
    raise ValueError(f"{path}: expected a JSON list [xyz_list, verts_list]")
  try:
    joints = np.asarray(data[0], np.float64)
    verts = np.asarray(data[1], np.float64) if len(data[1]) else None
  except ValueError as e:
    raise ValueError(f"{path}: ragged or non-numeric lists ({e})") from None
  if joints.ndim != 3 or joints.shape[1:] != (21, 3):
    raise ValueError(f"{path}: xyz must be [samples, 21, 3], got {joints.shape}")
  return joints, verts


def read_dexycb(path) -> tuple[np.ndarray, np.ndarray]:
  """A DexYCB result text -> (indices [n], joints [n, 21, 3] metres)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  rows = []
  for lineno, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split(",")
    if len(parts) != 64:
      raise ValueError(f"{path}:{lineno}: expected index + 63 values, got {len(parts)} fields")
    try:
      rows.append([float(x) for x in parts])
    except ValueError:
      raise ValueError(f"{path}:{lineno}: non-numeric field") from None
  arr = np.asarray(rows, np.float64).reshape(-1, 64)
  return arr[:, 0].astype(np.int64), arr[:, 1:].reshape(-1, 21, 3) / 1000.0


def read_freihand_gt(root) -> tuple[np.ndarray, np.ndarray]:
  """FreiHAND v2's `evaluation_xyz.json` and `evaluation_verts.json` from the dataset root."""
  root = pathlib.Path(root)
  arrays = []
  for name in ("evaluation_xyz.json", "evaluation_verts.json"):
    f = root / name
    if not f.is_file():
      raise FileNotFoundError(f"FreiHAND ground truth not found: {f}")
    try:
      arrays.append(np.asarray(json.loads(f.read_text()), np.float64))
    except json.JSONDecodeError as e:
      raise ValueError(f"{f}: not valid JSON ({e.msg} at line {e.lineno})") from None
  return arrays[0], arrays[1]
