"""What `--mode=predict` writes besides `predictions-<process>.npz`, for people and benchmarks.

- `meshes/`: one Wavefront OBJ per test frame (or image), the predicted `vertices` with the hand
  model's faces, metres, in the frame the method's `predict` documents (UST-Hand: world;
  single-image methods: world = view 0's camera inverted); any mesh viewer opens them.
  `config.predict.meshes` limits how many (-1: all).
- `overlays/`: per sample, the predicted mesh shaded over its views with skeletons, ground truth
  and hypotheses (`viz.figures.overlay_png`); `config.predict.overlays` of them (0: none).
- the benchmark's submission file (`eval.submission`), rows mapped back to its official image
  list through the stored clips' sequence, frame ids and cameras (`pipeline.clip_records`):
  FreiHAND's `freihand_pred.json` (by image id); DexYCB's toolkit result text for the test
  split of the configured setup (the toolkit's index: `dexycb.result_offsets`); HO3D's
  `ho3d_pred.json` in evaluation.txt's order, HO3D order, OpenGL frame. Clip methods' world
  predictions are moved into every view's camera. FreiHAND and HO3D need MANO's 778 vertices,
  so a run with the open hand gets a line saying why there is none; a file that does not cover
  the whole list says how much it covers. HO3D's evaluation ground truth is not public: predict
  the unlabelled `evaluation` split (`--config.data.test_split=evaluation`) for the server.
Every file is written atomically.
"""

from __future__ import annotations

import io

import jax
import numpy as np
from etils import epath

from handflow import files
from handflow.data import dexycb, ho3d, ho3d_cameras, pipeline
from handflow.eval import submission
from handflow.geometry import cameras
from handflow.hand import conventions


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
  """The benchmark's submission file if the dataset is a benchmark; returns a line saying what
  was written, or why nothing was ("" when the dataset is not a benchmark)."""
  name = config.data.name
  writer = {"freihand": _freihand, "dexycb": _dexycb, "ho3d": _ho3d}.get(name)
  if writer is None:
    return ""
  if jax.process_count() > 1:
    return (
      f"no {name} submission file from a {jax.process_count()}-process run: each process "
      "holds its own predictions-*.npz (write one from all of them with handflow.eval.submission)"
    )
  try:
    if not {"joints", "joints_cam"} & set(arrays):  # e.g. a 2D keypoint regressor
      raise ValueError("this method predicts no 3D joints")
    return writer(config, arrays, epath.Path(workdir))
  except ValueError as e:  # the writers' and the manual builders' named errors
    return f"no {name} submission file: {e}"


def _world_to_views(T_cam_world, x_world):
  """T_cam_world [t, v, 4, 4], x_world [t, n, 3] -> x_cam [t * v, n, 3] (frame-major)."""
  x_cam = cameras.transform(T_cam_world, np.asarray(x_world)[:, None])
  return x_cam.reshape(-1, *x_cam.shape[-2:])


def camera_frame(arrays: dict, records: dict) -> tuple[list, np.ndarray, np.ndarray | None]:
  """Per predicted image: ([(clip_id, frame, view)], joints [m, 21, 3], vertices [m, V, 3] or
  None) in that image's camera frame, metres. Single-image predictions carry them (`joints_cam`);
  clip predictions (`joints [n, t, 21, 3]`, world) are moved with the clip's stored
  `T_cam_world [t, v, 4, 4]` into each of its views."""
  single = "image_id" in arrays
  if ("joints_cam" if single else "joints") not in arrays:
    raise ValueError("this method predicts no 3D joints")
  if single:  # image_id = clip_id * t * v + frame * v + view (pipeline)
    t, v = next(iter(records.values()))["T_cam_world"].shape[:2]
    keys = [(c, *divmod(r, v)) for c, r in (divmod(int(i), t * v) for i in arrays["image_id"])]
    verts = arrays.get("vertices_cam")
    return keys, np.asarray(arrays["joints_cam"])[:, 0], None if verts is None else verts[:, 0]
  keys, joints, verts = [], [], []
  for i, clip in enumerate(np.asarray(arrays["clip_id"])):
    T_cam_world = np.asarray(records[int(clip)]["T_cam_world"])  # [t, v, 4, 4]
    t, v = T_cam_world.shape[:2]
    keys += [(int(clip), f, view) for f in range(t) for view in range(v)]
    joints.append(_world_to_views(T_cam_world, arrays["joints"][i]))
    if "vertices" in arrays:
      verts.append(_world_to_views(T_cam_world, arrays["vertices"][i]))
  return keys, np.concatenate(joints), np.concatenate(verts) if verts else None


def _records(config, keys) -> dict:
  if not config.data.get("manual_dir", ""):
    raise ValueError("its image list is read from the download: set config.data.manual_dir")
  return pipeline.clip_records(config, config.data.get("test_split", "test"), keys)


def _subset_note(written: int, total: int) -> str:
  return "" if written == total else f" (a subset: {written:,} of {total:,})"


def _freihand(config, arrays, workdir) -> str:
  if "joints_cam" not in arrays:  # clip methods predict world joints
    raise ValueError("this method predicts no camera-frame joints")
  order = np.argsort(np.asarray(arrays["image_id"]))
  joints = np.asarray(arrays["joints_cam"])[order, 0]
  verts = np.asarray(arrays["vertices_cam"])[order, 0]
  path = workdir / "freihand_pred.json"
  total = submission.OFFICIAL_SIZES["freihand"]
  submission.write_freihand(path, joints, verts, allow_subset=len(joints) != total)
  return f"wrote the FreiHAND submission {path}{_subset_note(len(joints), total)}"


def _dexycb(config, arrays, workdir) -> str:
  """The toolkit's result text for the test split (any setup): one line per predicted image,
  indexed as the toolkit enumerates the split (`dexycb.result_offsets`)."""
  d = config.data
  split = pipeline.base_split(d.get("test_split", "test"))
  records = _records(config, ("sequence", "frame_ids", "serials", "T_cam_world"))
  offsets, total = dexycb.result_offsets(
    d.manual_dir, d.get("setup", "s0"), split, bool(d.get("subset", False))
  )
  keys, joints, _ = camera_frame(arrays, records)
  index = np.asarray(
    [
      offsets[(records[c]["sequence"], records[c]["serials"][v].decode())]
      + int(records[c]["frame_ids"][f])
      for c, f, v in keys
    ]
  )
  order = np.argsort(index)
  path = workdir / f"dexycb_{d.get('setup', 's0')}_{dexycb.TOOLKIT_SPLITS[split]}_results.txt"
  submission.write_dexycb(path, joints[order], index[order])
  short = int(d.get("frames", 1)) > 1 or d.get("hands", "both") != "both"
  hint = (
    "; clips of several frames leave out sequence tails and hands='right' the left hands: "
    "data.frames=1, data.hands='both' predict every labelled image"
    if short
    else ""
  )
  return (
    f"wrote the DexYCB result file {path}: {len(index):,} of the split's {total:,} images "
    f"(the toolkit scores every labelled one{hint})"
  )


def _ho3d(config, arrays, workdir) -> str:
  """HO3D's pred.json in evaluation.txt's order, HO3D keypoint order, OpenGL camera frame,
  from the `test` split (evaluation.txt with the user's ground truth) or the unlabelled
  `evaluation` split (the server's case)."""
  d = config.data
  if pipeline.base_split(d.get("test_split", "test")) not in ("test", "evaluation"):
    raise ValueError(f"the test split is '{d.test_split}', not HO3D's evaluation list")
  version, subset = int(d.get("version", 3)), bool(d.get("subset", False))
  records = _records(config, ("sequence", "frame_ids", "T_cam_world"))
  rows = ho3d.evaluation_rows(d.manual_dir, version, subset)
  cams = None
  if int(d.get("views", 1)) > 1:  # multi-camera clips: `sequence` names the group
    cams = ho3d_cameras.camera_groups(epath.Path(d.manual_dir), ho3d.Ho3dError)
  keys, joints, verts = camera_frame(arrays, records)
  index = []
  for c, f, v in keys:
    seq = records[c]["sequence"] if cams is None else cams[records[c]["sequence"]][v][0]
    frame = int(records[c]["frame_ids"][f])
    if (seq, frame) not in rows:
      raise ValueError(f"{seq}/{frame:04d} is not in evaluation.txt")
    index.append(rows[(seq, frame)])
  order = np.argsort(index)
  joints = cameras.opencv_to_opengl(joints[order][:, list(conventions.HO3D_FROM_OPENPOSE)])
  if verts is None:
    raise ValueError("this method predicts no mesh, and HO3D's pred.json needs MANO's")
  path = workdir / "ho3d_pred.json"
  submission.write_ho3d(
    path, joints, cameras.opencv_to_opengl(verts[order]), version=version, allow_subset=True
  )
  return f"wrote the HO3D v{version} submission {path}{_subset_note(len(index), len(rows))}"
