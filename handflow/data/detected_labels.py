"""Real detector labels for the embedded `synthetic_hands`: MediaPipe over its renders, once.

`config.data.pseudo_labels.source = "mediapipe"`: the first run exports every render of a split
as a PNG, upsampled x2 and padded with black by half the side on every edge: MediaPipe's palm
detector finds the right hand in 23% of 128^2 test renders as they are, in 35% upsampled and
padded (600 test views; padding a whole side gives 37%, upsampling x4 nothing more). It then
runs MediaPipe's hand landmarker over them with `handflow.data.detect` (its own environment;
each label file is written atomically, so an interrupted run resumes with the images still
missing labels and never leaves a half-written one), and consolidates the labels into one array
file per split. Later runs read that file. Everything lives beside the dataset:

  <dataset dir>/mediapipe/x2_pad0.5/images/<split>/<clip>_<frame>_<view>.png
  <dataset dir>/mediapipe/x2_pad0.5/labels/<split>/<clip>_<frame>_<view>.json   (OpenPose JSON)
  <dataset dir>/mediapipe/x2_pad0.5/<split>.npz   uv [n, t, v, 21, 2] (pixels of the renders),
      conf [n, t, v, 21], clip_id [n], missing_files

(the folder names the export recipe, so a changed recipe never reads labels of another).
Detections MediaPipe calls a left hand are dropped: the renders hold right hands only, and those
detections are mostly wrong (median error 13 px against 4.5 px on 600 test views).

An image whose label file is missing when the split is consolidated counts as a missed
detection (confidence 0) and is counted in `missing_files`. Without the MediaPipe environment
`load` returns None and the caller says so in one line and uses the simulated detector.
"""

from __future__ import annotations

import pathlib

import numpy as np

from handflow import files
from handflow.data import detect, manual

UPSAMPLE = 2
PAD = 0.5  # black border on every edge, as a fraction of the render's side


def root(builder) -> pathlib.Path:
  return pathlib.Path(str(builder.data_dir)) / "mediapipe" / f"x{UPSAMPLE}_pad{PAD}"


def pad_px(side: int) -> int:
  """The border of an exported image, in its own (upsampled) pixels."""
  return int(round(PAD * side)) * UPSAMPLE


def _name(clip_id: int, f: int, v: int) -> str:
  return f"{clip_id:06d}_{f}_{v}"


def export_image(render):
  """A render [h, w, 3] uint8 -> the detector's input: upsampled, then padded."""
  big = np.repeat(np.repeat(render, UPSAMPLE, 0), UPSAMPLE, 1)
  b = pad_px(render.shape[0])
  return np.pad(big, ((b, b), (b, b), (0, 0)))


def _export(builder, split: str, where: pathlib.Path) -> tuple[list[tuple], int]:
  """PNG per render (skipping existing ones) -> ([(clip_id, t, v)] of the split, render side)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds

  where.mkdir(parents=True, exist_ok=True)
  clips, side = [], 0
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    images, cid = ex["images"], int(ex["clip_id"])
    t, v, side = images.shape[:3]
    clips.append((cid, t, v))
    for f in range(t):
      for c in range(v):
        path = where / f"{_name(cid, f, c)}.png"
        if path.exists():
          continue
        png = tf.io.encode_png(export_image(images[f, c])).numpy()
        files.write_atomic(path, lambda fh, png=png: fh.write(png))
  return sorted(clips), side


def build(builder, split: str, *, venv=None) -> dict:
  """Detects every render of `split` (resuming) and writes <split>.npz; returns its summary.
  FileNotFoundError without the MediaPipe environment."""
  venv = pathlib.Path(venv or detect.DEFAULT_VENV).expanduser()
  if not (venv / "bin" / "python").is_file():  # before exporting anything
    raise FileNotFoundError(f"no MediaPipe environment at {venv}")
  base = root(builder)
  images, labels = base / "images" / split, base / "labels" / split
  clips, side = _export(builder, split, images)
  jobs = []
  for cid, t, v in clips:
    for f in range(t):
      for c in range(v):
        out = labels / f"{_name(cid, f, c)}.json"
        if not out.exists():
          jobs.append((images / f"{_name(cid, f, c)}.png", out))
  if jobs:  # minutes on a CPU: say what is running
    print(
      f"handflow: MediaPipe over {len(jobs):,} renders of split '{split}' (once; cached in {base})",
      flush=True,
    )
  detect.run_jobs(jobs, venv=venv, create=False)
  summary = consolidate(base, split, clips, side)
  print(
    f"handflow: MediaPipe labels of '{split}': {summary['clips']} clips, the hand detected in "
    f"{summary['detected']:.0%} of views, {summary['missing_files']} label files missing",
    flush=True,
  )
  return summary


def consolidate(base: pathlib.Path, split: str, clips, side: int) -> dict:
  """Label files of `clips` [(clip_id, t, v)] of renders side x side -> <split>.npz
  (atomically), in the renders' pixels; a missing file is a missed detection, counted."""
  n = len(clips)
  t, v = clips[0][1:] if clips else (0, 0)
  uv = np.zeros((n, t, v, 21, 2), np.float32)
  conf = np.zeros((n, t, v, 21), np.float32)
  missing = 0
  for i, (cid, _, _) in enumerate(clips):
    for f in range(t):
      for c in range(v):
        path = base / "labels" / split / f"{_name(cid, f, c)}.json"
        missing += not path.is_file()
        u, k = manual.openpose_labels(path, "synthetic_hands")
        found = np.asarray(k)[:, None] > 0
        uv[i, f, c] = np.where(found, (np.asarray(u) - pad_px(side)) / UPSAMPLE, 0.0)
        conf[i, f, c] = k
  ids = np.asarray([c[0] for c in clips], np.int64)
  arrays = dict(uv=uv, conf=conf, clip_id=ids, missing_files=np.int64(missing))
  files.write_atomic(base / f"{split}.npz", lambda fh: np.savez(fh, **arrays))
  return {"clips": n, "detected": float(np.mean(conf.max(-1) > 0)) if n else 0.0,
          "missing_files": missing}  # fmt: skip


def cached(builder, split: str) -> dict | None:
  """{"images", "missing_files"} of the consolidated labels of `split`, or None (never built:
  the simulated detector stood in)."""
  path = root(builder) / f"{split}.npz"
  if not path.is_file():
    return None
  with np.load(path) as z:
    return {"images": int(np.prod(z["conf"].shape[:3])), "missing_files": int(z["missing_files"])}


def load(builder, split: str, *, venv=None):
  """{clip_id: (uv [t, v, 21, 2], conf [t, v, 21])} of `split` (built on first use), or None
  when there is no MediaPipe environment to build it with."""
  path = root(builder) / f"{split}.npz"
  if not path.is_file():
    try:
      build(builder, split, venv=venv)
    except FileNotFoundError:
      return None
  with np.load(path) as z:
    return {int(c): (z["uv"][i], z["conf"][i]) for i, c in enumerate(z["clip_id"])}
