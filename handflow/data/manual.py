"""What every builder over a user's download shares: checked file reading, the example structure,
projections and pseudo-labels.

Real benchmarks require registration, so they are read from `config.data.manual_dir` in their
official layout (REFERENCE §3). Each builder produces synthetic_hands' example structure, clips
of T frames x V views, so every method and the pipeline run on it unchanged:

  images   Sequence(Image, t * v)  encoded as shipped, frame-major (the pipeline reshapes)
  K        [t, v, 3, 3]            pixel intrinsics
  T_cam_world [t, v, 4, 4]         world -> camera (OpenCV: x right, y down, z forward)
  xyz      [t, 21, 3]              world keypoints, metres, OpenPose order
  uv       [t, v, 21, 2]           their projections; `visible` [t, v, 21]: inside the image
  uv_pl, conf                      2D pseudo-labels in OpenPose JSON, where the user has them
  verts    [t, 778, 3]             world MANO vertices, where the dataset (or a MANO file) has them;
  has_verts [t]                    which frames have one

Every file is checked as it is read; the first missing or malformed one is named in a
`ManualDataError`. Builders read one example at a time, so nothing is held beyond one clip
(`iter_json_array` streams the files too big to load). Multi-view labels are fused into the
world frame by `fuse_views`, which refuses cameras that disagree.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from handflow.geometry import cameras

# Pseudo-labels live under this folder of the dataset root, one OpenPose JSON per image, at the
# image's relative path (HanCo: HaMuCo's published `rgb_2D_keypoints/{sid}/cam{c}/{fid}.json`).
PSEUDO_LABEL_DIR = "rgb_2D_keypoints"
NUM_VERTS = 778


class ManualDataError(ValueError):
  """A download that is missing files or has malformed ones (names the file)."""


def read_json(path: pathlib.Path, dataset: str, error=ManualDataError):
  if not path.is_file():
    raise error(f"{dataset}: missing file {path}")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise error(f"{dataset}: malformed JSON in {path}: {e}") from None


def array(value, shape, path, key, dataset: str, error=ManualDataError) -> np.ndarray:
  """`value` as a finite float64 array of `shape` (None entries match any size), or an error
  naming the file and key."""
  try:
    a = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    a = None
  ok = (
    a is not None
    and a.ndim == len(shape)
    and all(s is None or s == d for s, d in zip(shape, a.shape, strict=True))
    and np.all(np.isfinite(a))
  )
  if not ok:
    got = None if a is None else a.shape
    raise error(f"{dataset}: {path}: '{key}' must be finite with shape {shape}, got {got}")
  return a


def image(path: pathlib.Path, size_hw: tuple[int, int], dataset: str, error=ManualDataError):
  """The file's bytes, after checking that it decodes to size_hw x 3 (names the file)."""
  import tensorflow as tf

  if not path.is_file():
    raise error(f"{dataset}: missing image {path}")
  data = path.read_bytes()
  try:
    shape = tuple(tf.io.decode_image(data, channels=3, expand_animations=False).shape)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    raise error(f"{dataset}: corrupt image {path}: {str(e).splitlines()[0]}") from None
  if shape != (*size_hw, 3):
    raise error(f"{dataset}: {path} is {shape}, expected {(*size_hw, 3)}")
  return data


def openpose_labels(path: pathlib.Path, dataset: str, error=ManualDataError):
  """OpenPose JSON -> (uv [21, 2], conf [21]); a missing file or no person is a missed
  detection (confidence 0)."""
  if not path.is_file():
    return np.zeros((21, 2)), np.zeros(21)
  doc = read_json(path, dataset, error)
  people = doc.get("people") if isinstance(doc, dict) else None
  if not people:
    return np.zeros((21, 2)), np.zeros(21)
  kp = array(
    people[0].get("hand_right_keypoints_2d"), (63,), path, "hand_right_keypoints_2d", dataset, error
  ).reshape(21, 3)
  return kp[:, :2], np.clip(kp[:, 2], 0.0, 1.0)


def openpose_doc(uv, conf) -> dict:
  """The OpenPose JSON of one image's 21 keypoints (what `openpose_labels` reads back)."""
  kp = np.concatenate([np.asarray(uv, np.float64), np.asarray(conf, np.float64)[:, None]], -1)
  return {"version": 1.3, "people": [{"hand_right_keypoints_2d": kp.reshape(-1).round(3).tolist()}]}


def label_path(root: pathlib.Path, image_rel: str) -> pathlib.Path:
  """Where the pseudo-labels of the image at `image_rel` (relative to the root) live."""
  return root / PSEUDO_LABEL_DIR / pathlib.PurePosixPath(image_rel).with_suffix(".json")


def clips_of(frames: list[int], t: int) -> list[list[int]]:
  """Non-overlapping windows of t consecutive frame ids."""
  out, run = [], []
  for f in frames:
    run = run + [f] if run and f == run[-1] + 1 else [f]
    if len(run) == t:
      out.append(run)
      run = []
  return out


def check_count(found: int, expected: int, what: str, where, subset: bool, dataset: str, error):
  """The official size, unless the config declares a subset (a subset may not be larger)."""
  if found == expected or (subset and found < expected):
    return
  hint = "" if subset else "; set subset=True (config.data.subset) for a declared subset"
  raise error(f"{dataset}: {where} has {found} {what}, the release has {expected}{hint}")


def features(t: int, v: int, size_hw, *, encoding="jpeg", verts=False, extra=None):
  """The example structure above (plus `extra` features) for clips of t frames x v views."""
  f = tfds.features
  image = f.Image(shape=(*size_hw, 3), encoding_format=encoding)
  out = {
    "clip_id": f.Scalar(np.int64),
    # Encoded as shipped, frame-major [t * v] (TFDS cannot decode nested sequences).
    "images": f.Sequence(image, length=t * v),
    "K": f.Tensor(shape=(t, v, 3, 3), dtype=np.float32),
    "T_cam_world": f.Tensor(shape=(t, v, 4, 4), dtype=np.float32),
    "xyz": f.Tensor(shape=(t, 21, 3), dtype=np.float32),
    "uv": f.Tensor(shape=(t, v, 21, 2), dtype=np.float32),
    "visible": f.Tensor(shape=(t, v, 21), dtype=np.bool_),
    "uv_pl": f.Tensor(shape=(t, v, 21, 2), dtype=np.float32),
    "conf": f.Tensor(shape=(t, v, 21), dtype=np.float32),
  }
  if verts:
    out["verts"] = f.Tensor(shape=(t, NUM_VERTS, 3), dtype=np.float32)
  out.update(extra or {})
  return f.FeaturesDict(out)


def geometry(K, T_cam_world, xyz, size_hw) -> dict:
  """The example's float32 geometry: K, T_cam_world, xyz, and uv / visible projected from them
  (visible = in front of the camera and inside the image)."""
  K, T, xyz = (np.asarray(a, np.float64) for a in (K, T_cam_world, xyz))
  t, v = K.shape[:2]
  uv, depth = cameras.world_to_image(K, T, np.broadcast_to(xyz[:, None], (t, v, 21, 3)))
  uv, depth = np.asarray(uv), np.asarray(depth)
  h, w = size_hw
  inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1)
  inside &= (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
  f32 = lambda a: np.asarray(a, np.float32)
  return {"K": f32(K), "T_cam_world": f32(T), "xyz": f32(xyz), "uv": f32(uv), "visible": inside}


MAX_DISAGREEMENT_M = 0.02


def fuse_views(joints_cam, T_world_cam, where: str, dataset: str, error=ManualDataError):
  """[v, 21, 3] one frame's joints labelled in each camera's frame -> their mean [21, 3] in
  the world. The cameras must agree there: a spread beyond MAX_DISAGREEMENT_M means extrinsics
  read in the wrong direction (or frames that are not simultaneous), and is an error."""
  T = np.asarray(T_world_cam, np.float64)
  world = np.asarray(joints_cam) @ np.swapaxes(T[:, :3, :3], -1, -2) + T[:, None, :3, 3]
  mean = world.mean(0)
  spread = np.linalg.norm(world - mean, axis=-1).max()
  if spread > MAX_DISAGREEMENT_M:
    raise error(
      f"{dataset}: the cameras of {where} disagree by {spread * 1000:.0f} mm in the world "
      "frame: the extrinsics do not map their labels together (or the frames are not "
      "simultaneous)"
    )
  return mean


def make_builder(cls, config, data_dir: str | None = None):
  """A builder of `config`: TFDS refuses a custom config named like a registered one, so
  registered configs are passed by name."""
  registered = {c.name for c in cls.BUILDER_CONFIGS}
  return cls(config=config.name if config.name in registered else config, data_dir=data_dir or None)


def rigid(R=None, t=None) -> np.ndarray:
  """The 4 x 4 matrix [R t; 0 1] (identity where not given)."""
  T = np.eye(4)
  if R is not None:
    T[:3, :3] = R
  if t is not None:
    T[:3, 3] = t
  return T


@functools.cache
def _mano(mano_dir: str, side: str):
  from handflow import hand

  for ext in (".pkl", ".npz"):
    path = pathlib.Path(mano_dir).expanduser() / f"MANO_{side.upper()}{ext}"
    if path.is_file():
      model = hand.load(str(path), side)
      return model, jax.jit(
        functools.partial(hand.forward, model), static_argnames=("pca", "flat_hand_mean")
      )
  raise ManualDataError(
    f"no MANO_{side.upper()}.pkl (or .npz) in {mano_dir} (config.data.mano_dir): the ground-truth "
    "meshes need the MANO model file, which you download from mano.is.tue.mpg.de"
  )


def mano_vertices(
  mano_dir: str, side: str, pose, betas, transl, *, pca: bool = False, flat_hand_mean=False
):
  """MANO vertices [..., 778, 3] (metres) of the benchmarks' fits: pose [..., 3 + c] = global
  axis-angle then the finger pose (45 axis-angle, or c PCA coefficients with pca=True), relative
  to `hands_mean` unless flat_hand_mean (FreiHAND, HanCo and DexYCB fit relative to it; HO3D's
  `handPose` is absolute), betas [..., 10], transl [..., 3] added to every vertex (manopth's and
  the chumpy model's convention, in metres)."""
  model, forward = _mano(str(mano_dir), side)
  pose = jnp.asarray(pose, jnp.float32)
  out = forward(
    pose[..., 3:],
    jnp.asarray(betas, jnp.float32),
    global_orient=pose[..., :3],
    transl=jnp.asarray(transl, jnp.float32),
    pca=pca,
    flat_hand_mean=flat_hand_mean,
  )
  if model.num_vertices != NUM_VERTS:
    raise ManualDataError(f"{mano_dir}: the MANO model has {model.num_vertices} vertices")
  return np.asarray(out.vertices, np.float32)


def iter_json_array(path: pathlib.Path, dataset: str, error=ManualDataError, chunk=1 << 20):
  """The elements of a top-level JSON array, parsed one at a time from `chunk`-sized reads:
  FreiHAND's `training_verts.json` is ~1 GB of text, far too much to `json.load` at once."""
  if not path.is_file():
    raise error(f"{dataset}: missing file {path}")
  decoder = json.JSONDecoder()
  with open(path, encoding="utf-8") as fh:
    buf, pos, eof, i = "", 0, False, 0

    def more():
      nonlocal buf, pos, eof
      data = fh.read(chunk)
      eof = not data
      buf, pos = buf[pos:] + data, 0

    def skip_space():
      nonlocal pos
      while True:
        while pos < len(buf) and buf[pos].isspace():
          pos += 1
        if pos < len(buf) or eof:
          return
        more()

    def bad(what):
      return error(f"{dataset}: malformed JSON in {path}: {what} at element {i}")

    more()
    skip_space()
    if pos >= len(buf) or buf[pos] != "[":
      raise bad("expected a top-level array")
    pos += 1
    while True:
      skip_space()
      if pos >= len(buf):
        raise bad("truncated file")
      if buf[pos] == "]":
        return
      if i:
        if buf[pos] != ",":
          raise bad("expected ','")
        pos += 1
        skip_space()
      while True:
        try:
          value, end = decoder.raw_decode(buf, pos)
          if end < len(buf) or eof:  # a number at the end of the buffer may continue
            break
        except json.JSONDecodeError:
          if eof:
            raise bad("truncated or invalid value") from None
        more()
      yield value
      pos, i = end, i + 1
