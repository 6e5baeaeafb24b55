"""HanCo (Zimmermann et al., ICCV 2021) as a TFDS builder over the user's download.

HanCo requires registration, so it is read from `config.data.manual_dir` in the official layout
(REFERENCE §3), never downloaded:

  rgb/{sid:04d}/cam{c}/{fid:08d}.jpg          green-screen images, 224 x 224 (training split)
  rgb_merged/{sid:04d}/cam{c}/{fid:08d}.jpg   composited backgrounds (test split)
  calib/{sid:04d}/{fid:08d}.json              {"K": [8][3][3], "M": [8][4][4] world -> camera}
  xyz/{sid:04d}/{fid:08d}.json                [21][3] world keypoints, metres
  shape/{sid:04d}/{fid:08d}.json              MANO fit {"poses", "shapes", "global_t"} (world)
  meta.json                                   {"is_valid": [sid][fid], "has_fit": ..., ...}
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
(nothing is held in memory beyond one clip). With `mano_dir` (the folder of MANO_RIGHT.pkl),
examples also carry the fits' world meshes `verts` [t, 778, 3] and `has_verts` [t] for MPVPE.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from handflow.data import manual

SEQUENCES = 1518  # in the official release
CAMERAS = 8
FIRST_TEST_SEQUENCE = 1200
IMAGE_SIZE = 224


class HancoError(manual.ManualDataError):
  """A HanCo download that is missing files or has malformed ones (names the file)."""


@dataclasses.dataclass
class HancoConfig(tfds.core.BuilderConfig):
  frames: int = 4
  subset: bool = False  # allow fewer sequences than the official release (declared subsets)
  mano_dir: str = ""  # MANO_RIGHT.pkl's folder: ground-truth meshes from the MANO fits

  @classmethod
  def make(cls, frames: int = 4, subset: bool = False, mano_dir: str = "") -> HancoConfig:
    return cls(
      name=f"t{frames}" + ("_subset" if subset else "") + ("_mano" if mano_dir else ""),
      frames=frames,
      subset=subset,
      mano_dir=str(mano_dir or ""),
      description=f"clips of {frames} consecutive frames x {CAMERAS} cameras",
    )


_read_json = functools.partial(manual.read_json, dataset="HanCo", error=HancoError)
_array = functools.partial(manual.array, dataset="HanCo", error=HancoError)
_image = functools.partial(
  manual.image, size_hw=(IMAGE_SIZE, IMAGE_SIZE), dataset="HanCo", error=HancoError
)
_pseudo_labels = functools.partial(manual.openpose_labels, dataset="HanCo", error=HancoError)
clips_of = manual.clips_of


def scan(root: pathlib.Path, subset: bool) -> tuple[dict[int, list[int]], dict]:
  """({sequence id: valid frame ids}, meta.json) checked against the official count."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise HancoError(f"HanCo: manual_dir {root} does not exist (config.data.manual_dir)")
  meta = _read_json(root / "meta.json")
  if not isinstance(meta, dict) or "is_valid" not in meta:
    raise HancoError(f"HanCo: {root / 'meta.json'} has no 'is_valid' key")
  valid = meta["is_valid"]
  manual.check_count(
    len(valid), SEQUENCES, "sequences", root / "meta.json", subset, "HanCo", HancoError
  )
  sequences = {sid: [f for f, ok in enumerate(frames) if ok] for sid, frames in enumerate(valid)}
  return sequences, meta


def _has_fit(meta: dict, sid: int, fid: int) -> bool:
  fits = meta.get("has_fit")
  try:
    return bool(fits[sid][fid]) if fits is not None else True
  except (IndexError, TypeError):
    raise HancoError(
      f"HanCo: meta.json 'has_fit' has no entry for sequence {sid} frame {fid}"
    ) from None


class Hanco(tfds.core.GeneratorBasedBuilder):
  """HanCo multi-view hand sequences (8 calibrated cameras)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Clips of T frames x 8 cameras; HaMuCo's split; OpenPose labels.",
    "1.1.0": "Ground-truth MANO meshes (`verts`, `has_verts`) when a MANO file is given.",
  }
  BUILDER_CONFIGS = [HancoConfig.make()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Register and download HanCo from https://lmb.informatik.uni-freiburg.de/projects/contra-hand/"
    ", unpack it, and pass its root as config.data.manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    f = tfds.features
    extra = {
      "sequence": f.Scalar(np.int64),
      "frame_ids": f.Tensor(shape=(cfg.frames,), dtype=np.int64),
    }
    if cfg.mano_dir:
      extra["has_verts"] = f.Tensor(shape=(cfg.frames,), dtype=np.bool_)
    return self.dataset_info_from_configs(
      features=manual.features(
        cfg.frames, CAMERAS, (IMAGE_SIZE, IMAGE_SIZE), verts=bool(cfg.mano_dir), extra=extra
      ),
      homepage="https://lmb.informatik.uni-freiburg.de/projects/contra-hand/",
      citation="Zimmermann, Argus, Brox. Contrastive Representation Learning for Hand Shape "
      "Estimation. 2021.",
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    sequences, meta = scan(root, self.builder_config.subset)
    if self.builder_config.mano_dir:
      # Fail before reading any image when the MANO file is missing or malformed.
      manual.mano_vertices(
        self.builder_config.mano_dir, "right", np.zeros(48), np.zeros(10), np.zeros(3)
      )
    train = {s: f for s, f in sequences.items() if s < FIRST_TEST_SEQUENCE}
    test = {s: f for s, f in sequences.items() if s >= FIRST_TEST_SEQUENCE}
    return {
      "train": self._generate_examples(root, meta, train, "rgb"),
      "test": self._generate_examples(root, meta, test, "rgb_merged"),
    }

  def _generate_examples(self, root, meta, sequences, image_dir):
    t, mano_dir = self.builder_config.frames, self.builder_config.mano_dir
    clip_id = 0
    for sid, frames in sorted(sequences.items()):
      for window in clips_of(frames, t):
        ex = read_clip(root, sid, window, image_dir)
        if mano_dir:
          fits = [_has_fit(meta, sid, fid) for fid in window]
          ex["verts"] = read_meshes(root, sid, window, fits, mano_dir)
          ex["has_verts"] = np.asarray(fits)
        yield (
          f"{sid:04d}-{window[0]:08d}",
          {"clip_id": clip_id, "sequence": sid, "frame_ids": np.asarray(window, np.int64), **ex},
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
    labels = [_pseudo_labels(manual.label_path(root, r)) for r in rel]
    uv_pl.append([u for u, _ in labels])
    conf.append([c for _, c in labels])
  return {
    "images": [img for per_frame in images for img in per_frame],
    **manual.geometry(K, T, xyz, (IMAGE_SIZE, IMAGE_SIZE)),
    "uv_pl": np.asarray(uv_pl, np.float32),
    "conf": np.asarray(conf, np.float32),
  }


def read_meshes(root, sid, frames, fits, mano_dir) -> np.ndarray:
  """World MANO vertices [t, 778, 3] from `shape/{sid}/{fid}.json` ({"poses": [1, 48],
  "shapes": [1, 10], "global_t": [1, 1, 3]}, manopth with flat_hand_mean=False, metres); zeros
  for frames without a fit."""
  pose, betas, trans = (
    np.zeros((len(frames), 48)),
    np.zeros((len(frames), 10)),
    np.zeros((len(frames), 3)),
  )
  for i, (fid, fit) in enumerate(zip(frames, fits, strict=True)):
    if not fit:
      continue
    path = root / "shape" / f"{sid:04d}/{fid:08d}.json"
    doc = _read_json(path)
    if not isinstance(doc, dict):
      raise HancoError(f"HanCo: {path} is not a JSON object")
    pose[i] = _array(doc.get("poses"), (1, 48), path, "poses")[0]
    betas[i] = _array(doc.get("shapes"), (1, 10), path, "shapes")[0]
    trans[i] = _array(doc.get("global_t"), (1, 1, 3), path, "global_t").reshape(3)
  verts = manual.mano_vertices(mano_dir, "right", pose, betas, trans)
  return np.where(np.asarray(fits)[:, None, None], verts, 0.0).astype(np.float32)


def builder(data_config, data_dir: str | None = None) -> Hanco:
  """The builder of an experiment's `config.data` (frames, subset, mano_dir); `prepare` passes
  `config.data.manual_dir` when building."""
  config = HancoConfig.make(
    int(data_config.frames),
    bool(data_config.get("subset", False)),
    str(data_config.get("mano_dir", "") or ""),
  )
  return manual.make_builder(Hanco, config, data_dir)
