"""What `--mode=predict` writes besides `predictions-<process>.npz`, for people and benchmarks.

- `meshes/`: one Wavefront OBJ per test frame (or image), the predicted `vertices` with the hand
  model's faces, metres, in the frame the method's `predict` documents (UST-Hand: world;
  single-image methods: world = view 0's camera inverted); any mesh viewer opens them.
  `config.predict.meshes` limits how many (-1: all).
- `overlays/`: per sample, the predicted mesh shaded over its views with skeletons, ground truth
  and hypotheses (`viz.figures.overlay_png`); `config.predict.overlays` of them (0: none).
- the official submission file where the test split is a benchmark's evaluation set:
  FreiHAND's `pred.json` (camera frame, OpenPose order, metres, in evaluation order by image id;
  it needs MANO's 778 vertices, so a run with the open hand gets a line saying why there is
  none). HO3D and DexYCB clips are windows of their sequences, and their official files list
  images: `eval.submission` writes them from per-image predictions, but predict does not map
  clips back to that list yet (said in one line).
Every file is written atomically.
"""

from __future__ import annotations

import io

import numpy as np
from etils import epath

from handflow import files
from handflow.eval import submission


def obj_text(verts, faces, header: str = "") -> str:
  """A Wavefront OBJ of verts [n, 3] and faces [f, 3] (0-based; OBJ counts from 1)."""
  buf = io.StringIO()
  for line in header.splitlines():
    buf.write(f"# {line}\n")
  np.savetxt(buf, np.asarray(verts, np.float64), fmt="v %.6f %.6f %.6f")
  np.savetxt(buf, np.asarray(faces, np.int64) + 1, fmt="f %d %d %d")
  return buf.getvalue()


def sample_names(arrays: dict) -> list[str]:
  """One name per (row, frame) of `vertices` [n, t, v, 3]: image ids, else clip and frame."""
  n, t = arrays["vertices"].shape[:2]
  if "image_id" in arrays:
    return [f"image{int(i):06d}" for i in arrays["image_id"] for _ in range(t)]
  return [f"clip{int(c):05d}_frame{f}" for c in arrays["clip_id"] for f in range(t)]


def write_meshes(directory, arrays: dict, faces, limit: int, title: str) -> int:
  """OBJ files of the first `limit` (-1: every) predicted frames; returns how many."""
  verts = np.asarray(arrays["vertices"])
  flat = verts.reshape(-1, *verts.shape[2:])
  names = sample_names(arrays)
  count = len(names) if limit < 0 else min(limit, len(names))
  directory = epath.Path(directory)
  for name, v in zip(names[:count], flat[:count], strict=True):
    text = obj_text(v, faces, f"{title} prediction {name}\nmetres; frame: see predict's docs")
    files.write_bytes(directory / f"{name}.obj", text.encode())
  return count


def write_submission(config, arrays: dict, workdir) -> str:
  """The benchmark's submission file if the test split is one; returns a line saying what
  was written, or why nothing was ("" when the dataset is not a benchmark)."""
  name = config.data.name
  if name in ("ho3d", "dexycb"):
    return (
      f"no {name} submission file: predict's clips are windows of sequences, not the official "
      "image list (write one from per-image predictions with handflow.eval.submission)"
    )
  if name != "freihand":
    return ""
  if "joints_cam" not in arrays:
    return "no freihand submission file: this method predicts no camera-frame joints"
  order = np.argsort(np.asarray(arrays["image_id"]))
  joints = np.asarray(arrays["joints_cam"])[order, 0]
  verts = np.asarray(arrays["vertices_cam"])[order, 0]
  path = epath.Path(workdir) / "freihand_pred.json"
  full = len(joints) == submission.OFFICIAL_SIZES["freihand"]
  try:
    submission.write_freihand(path, joints, verts, allow_subset=not full)
  except ValueError as e:
    return f"no freihand submission file: {e}"
  part = "" if full else f" (a subset: {len(joints)} of {submission.OFFICIAL_SIZES['freihand']})"
  return f"wrote the FreiHAND submission {path}{part}"
