"""HanCo (Zimmermann et al., ICCV 2021) as a TFDS builder over the user's download.

HanCo requires registration, so it is read from `config.data.manual_dir` in the official layout
(REFERENCE §3), never downloaded:

  rgb/{sid:04d}/cam{c}/{fid:08d}.jpg          green-screen images, 224 x 224 (training split)
  rgb_merged/{sid:04d}/cam{c}/{fid:08d}.jpg   composited backgrounds (test split)
  calib/{sid:04d}/{fid:08d}.json              {"K": [8][3][3], "M": [8][4][4] world -> camera}
  xyz/{sid:04d}/{fid:08d}.json                [21][3] world keypoints, metres
  meta.json                                   {"is_valid": [sid][fid], ...}
  rgb_2D_keypoints/{sid:04d}/cam{c}/{fid:08d}.json   optional OpenPose pseudo-labels
                                              {"people": [{"hand_right_keypoints_2d": [63]}]}

Examples have synthetic_hands' structure (clips of T frames x 8 views: `images`, `K`,
`T_cam_world`, `xyz`, `uv`, `visible`), so every method and the pipeline run on it unchanged;
the pseudo-labels, where present, are `uv_pl` / `conf` (confidence 0 where a file is missing).
Splits follow the prior method (HaMuCo): sequences < 1200 from `rgb` are `train`, sequences
>= 1200 from `rgb_merged` are `test`; a clip is T consecutive valid frames of one sequence
(non-overlapping). HanCo labels no visibility: `visible` is "projects inside the image".
All 1,518 sequences must be present unless `HancoConfig.subset` is set. Every file is checked
as it is read (a missing or malformed file names itself), and clips are generated one at a time
(nothing is held in memory beyond one clip).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from handflow.geometry import cameras

SEQUENCES = 1518  # in the official release
CAMERAS = 8
FIRST_TEST_SEQUENCE = 1200
IMAGE_SIZE = 224


class HancoError(ValueError):
  """A HanCo download that is missing files or has malformed ones (names the file)."""


@dataclasses.dataclass
class HancoConfig(tfds.core.BuilderConfig):
  frames: int = 4
  subset: bool = False  # allow fewer sequences than the official release (declared subsets)

  @classmethod
  def make(cls, frames: int = 4, subset: bool = False) -> HancoConfig:
    return cls(
      name=f"t{frames}" + ("_subset" if subset else ""),
      frames=frames,
      subset=subset,
      description=f"clips of {frames} consecutive frames x {CAMERAS} cameras",
    )


def _read_json(path: pathlib.Path):
  if not path.is_file():
    raise HancoError(f"HanCo: missing file {path}")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise HancoError(f"HanCo: malformed JSON in {path}: {e}") from None


def _array(value, shape, path, key):
  try:
    a = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    a = None
  if a is None or a.shape != shape or not np.all(np.isfinite(a)):
    got = None if a is None else a.shape
    raise HancoError(f"HanCo: {path}: '{key}' must be finite with shape {shape}, got {got}")
  return a


def _image(path: pathlib.Path) -> bytes:
  """The JPEG's bytes, after checking that it decodes to 224 x 224 x 3 (names the file)."""
  import tensorflow as tf

  if not path.is_file():
    raise HancoError(f"HanCo: missing image {path}")
  data = path.read_bytes()
  try:
    shape = tuple(tf.io.decode_jpeg(data, channels=3).shape)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    raise HancoError(f"HanCo: corrupt image {path}: {str(e).splitlines()[0]}") from None
  if shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise HancoError(f"HanCo: {path} is {shape}, expected ({IMAGE_SIZE}, {IMAGE_SIZE}, 3)")
  return data


def _pseudo_labels(path: pathlib.Path):
  """OpenPose JSON -> (uv [21, 2], conf [21]); a missing file is a missed detection."""
  if not path.is_file():
    return np.zeros((21, 2)), np.zeros(21)
  doc = _read_json(path)
  people = doc.get("people") if isinstance(doc, dict) else None
  if not people:
    return np.zeros((21, 2)), np.zeros(21)
  kp = _array(people[0].get("hand_right_keypoints_2d"), (63,), path, "hand_right_keypoints_2d")
  kp = kp.reshape(21, 3)
  return kp[:, :2], np.clip(kp[:, 2], 0.0, 1.0)


def scan(root: pathlib.Path, subset: bool) -> dict[int, list[int]]:
  """{sequence id: valid frame ids} from meta.json, checked against the official count."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise HancoError(f"HanCo: manual_dir {root} does not exist (config.data.manual_dir)")
  meta = _read_json(root / "meta.json")
  if not isinstance(meta, dict) or "is_valid" not in meta:
    raise HancoError(f"HanCo: {root / 'meta.json'} has no 'is_valid' key")
  valid = meta["is_valid"]
  if len(valid) != SEQUENCES and not subset:
    raise HancoError(
      f"HanCo: {root / 'meta.json'} lists {len(valid)} sequences, the release has {SEQUENCES}; "
      "set subset=True (config.data.subset) for a declared subset"
    )
  return {sid: [f for f, ok in enumerate(frames) if ok] for sid, frames in enumerate(valid)}


def clips_of(frames: list[int], t: int) -> list[list[int]]:
  """Non-overlapping windows of t consecutive frame ids."""
  out, run = [], []
  for f in frames:
    run = run + [f] if run and f == run[-1] + 1 else [f]
    if len(run) == t:
      out.append(run)
      run = []
  return out


class Hanco(tfds.core.GeneratorBasedBuilder):
  """HanCo multi-view hand sequences (8 calibrated cameras)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Clips of T frames x 8 cameras; HaMuCo's split; OpenPose labels."}
  BUILDER_CONFIGS = [HancoConfig.make()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Register and download HanCo from https://lmb.informatik.uni-freiburg.de/projects/contra-hand/"
    ", unpack it, and pass its root as config.data.manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    t, v, s = self.builder_config.frames, CAMERAS, IMAGE_SIZE
    f = tfds.features
    image = f.Image(shape=(s, s, 3), encoding_format="jpeg")
    return self.dataset_info_from_configs(
      features=f.FeaturesDict(
        {
          "clip_id": f.Scalar(np.int64),
          "sequence": f.Scalar(np.int64),
          "frame_ids": f.Tensor(shape=(t,), dtype=np.int64),
          # JPEGs as shipped, frame-major [t * v] (TFDS cannot decode nested sequences); the
          # pipeline reads them as [t, v, ...].
          "images": f.Sequence(image, length=t * v),
          "K": f.Tensor(shape=(t, v, 3, 3), dtype=np.float32),
          "T_cam_world": f.Tensor(shape=(t, v, 4, 4), dtype=np.float32),
          "xyz": f.Tensor(shape=(t, 21, 3), dtype=np.float32),
          "uv": f.Tensor(shape=(t, v, 21, 2), dtype=np.float32),
          "visible": f.Tensor(shape=(t, v, 21), dtype=np.bool_),
          "uv_pl": f.Tensor(shape=(t, v, 21, 2), dtype=np.float32),
          "conf": f.Tensor(shape=(t, v, 21), dtype=np.float32),
        }
      ),
      homepage="https://lmb.informatik.uni-freiburg.de/projects/contra-hand/",
      citation="Zimmermann, Argus, Brox. Contrastive Representation Learning for Hand Shape "
      "Estimation. 2021.",
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    sequences = scan(root, self.builder_config.subset)
    train = {s: f for s, f in sequences.items() if s < FIRST_TEST_SEQUENCE}
    test = {s: f for s, f in sequences.items() if s >= FIRST_TEST_SEQUENCE}
    return {
      "train": self._generate_examples(root, train, "rgb"),
      "test": self._generate_examples(root, test, "rgb_merged"),
    }

  def _generate_examples(self, root, sequences, image_dir):
    t = self.builder_config.frames
    clip_id = 0
    for sid, frames in sorted(sequences.items()):
      for window in clips_of(frames, t):
        yield (
          f"{sid:04d}-{window[0]:08d}",
          {
            "clip_id": clip_id,
            "sequence": sid,
            "frame_ids": np.asarray(window, np.int64),
            **read_clip(root, sid, window, image_dir),
          },
        )
        clip_id += 1


def read_clip(root: pathlib.Path, sid: int, frames: list[int], image_dir: str) -> dict:
  """One clip's arrays (and JPEG bytes), every file checked."""
  K, T, xyz, images, uv_pl, conf = [], [], [], [], [], []
  for fid in frames:
    name = f"{sid:04d}/{fid:08d}.json"
    calib = _read_json(root / "calib" / name)
    if not isinstance(calib, dict):
      raise HancoError(f"HanCo: {root / 'calib' / name} is not a JSON object")
    K.append(_array(calib.get("K"), (CAMERAS, 3, 3), root / "calib" / name, "K"))
    T.append(_array(calib.get("M"), (CAMERAS, 4, 4), root / "calib" / name, "M"))
    xyz.append(_array(_read_json(root / "xyz" / name), (21, 3), root / "xyz" / name, "xyz"))
    rel = [f"{sid:04d}/cam{c}/{fid:08d}" for c in range(CAMERAS)]
    images.append([_image(root / image_dir / f"{r}.jpg") for r in rel])
    labels = [_pseudo_labels(root / "rgb_2D_keypoints" / f"{r}.json") for r in rel]
    uv_pl.append([u for u, _ in labels])
    conf.append([c for _, c in labels])
  K, T, xyz = np.asarray(K), np.asarray(T), np.asarray(xyz)
  uv, depth = cameras.world_to_image(
    K, T, np.broadcast_to(xyz[:, None], (len(frames), CAMERAS, 21, 3))
  )
  uv, depth = np.asarray(uv), np.asarray(depth)
  inside = (depth > 0) & np.all((uv >= 0) & (uv <= IMAGE_SIZE - 1), axis=-1)
  f32 = lambda a: np.asarray(a, np.float32)
  return {
    "images": [img for per_frame in images for img in per_frame],
    "K": f32(K),
    "T_cam_world": f32(T),
    "xyz": f32(xyz),
    "uv": f32(uv),
    "visible": inside,
    "uv_pl": f32(uv_pl),
    "conf": f32(conf),
  }


def builder(data_config, data_dir: str | None = None) -> Hanco:
  """The builder of an experiment's `config.data` (frames, subset); `prepare` passes
  `config.data.manual_dir` when building."""
  config = HancoConfig.make(int(data_config.frames), bool(data_config.get("subset", False)))
  registered = {c.name for c in Hanco.BUILDER_CONFIGS}
  return Hanco(
    config=config.name if config.name in registered else config, data_dir=data_dir or None
  )
