"""DexYCB (Chao et al., CVPR 2021) as a TFDS builder over the user's download.

Read from `config.data.manual_dir` in the official layout (the toolkit's `DEX_YCB_DIR`):

  {subject}/{sequence}/meta.yml            serials, num_frames, mano_sides, mano_calib, extrinsics
  {subject}/{sequence}/{serial}/color_{f:06d}.jpg     640 x 480
  {subject}/{sequence}/{serial}/labels_{f:06d}.npz    joint_3d [1, 21, 3] (camera frame, m; -1
                                           where the hand is not labelled), joint_2d, pose_m [1, 51]
  calibration/intrinsics/{serial}_640x480.yml         color: fx, fy, ppx, ppy
  calibration/extrinsics_{id}/extrinsics.yml          3 x 4 camera -> world (the master camera)
  calibration/mano_{calib}/mano.yml                   the subject's MANO betas
  rgb_2D_keypoints/{subject}/{sequence}/{serial}/color_{f:06d}.json   optional pseudo-labels

Setups and splits are the toolkit's (s0: seen subjects, views and objects, i % 5 == 4 held
out; s1: unseen subjects; s2: unseen cameras; s3: unseen objects); `validation` is its `val`.
Examples have synthetic_hands' structure: with `multiview` (s0, s1, s3) a clip is T
consecutive labelled frames x the split's 8 cameras in the master camera's world frame; without
it (and always for s2, whose splits differ in their cameras) a clip is one camera's T frames in
its own frame. Frames whose joints are all -1 are skipped, as the toolkit's evaluator does.
`is_left` marks left hands (`hands="right"` leaves them out). With `mano_dir`, `verts` are the
labels' MANO meshes (manopth: PCA-45, flat_hand_mean=False, the subject's betas). The release
(10 subjects x 100 sequences x 8 cameras) is enforced unless `subset` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import zipfile

import numpy as np
import tensorflow_datasets as tfds
import yaml

from handflow.data import manual

SUBJECTS = tuple(
  f"{date}-subject-{i + 1:02d}"
  for i, date in enumerate(
    (
      "20200709",
      "20200813",
      "20200820",
      "20200903",
      "20200908",
      "20200918",
      "20200928",
      "20201002",
      "20201015",
      "20201022",
    )
  )
)
SERIALS = (
  "836212060125",
  "839512060362",
  "840412060917",
  "841412060263",
  "932122060857",
  "932122060861",
  "932122061900",
  "932122062010",
)
SEQUENCES_PER_SUBJECT = 100
HEIGHT, WIDTH = 480, 640
_ALL = tuple(range(10))
_HELD_OUT = tuple(i for i in range(100) if i % 5 == 4)
_NOT_HELD_OUT = tuple(i for i in range(100) if i % 5 != 4)
# setup -> split -> (subject indices, camera indices, sequence indices), as dex_ycb_toolkit.
SETUPS = {
  "s0": {
    "train": (_ALL, tuple(range(8)), _NOT_HELD_OUT),
    "validation": ((0, 1), tuple(range(8)), _HELD_OUT),
    "test": (tuple(range(2, 10)), tuple(range(8)), _HELD_OUT),
  },
  "s1": {
    "train": ((0, 1, 2, 3, 4, 5, 9), tuple(range(8)), tuple(range(100))),
    "validation": ((6,), tuple(range(8)), tuple(range(100))),
    "test": ((7, 8), tuple(range(8)), tuple(range(100))),
  },
  "s2": {
    "train": (_ALL, tuple(range(6)), tuple(range(100))),
    "validation": (_ALL, (6,), tuple(range(100))),
    "test": (_ALL, (7,), tuple(range(100))),
  },
  "s3": {
    "train": (
      _ALL,
      tuple(range(8)),
      tuple(i for i in range(100) if i // 5 not in (3, 7, 11, 15, 19)),
    ),
    "validation": (_ALL, tuple(range(8)), tuple(i for i in range(100) if i // 5 in (3, 19))),
    "test": (_ALL, tuple(range(8)), tuple(i for i in range(100) if i // 5 in (7, 11, 15))),
  },
}


class DexycbError(manual.ManualDataError):
  """A DexYCB download that is missing files or has malformed ones (names the file)."""


_array = functools.partial(manual.array, dataset="DexYCB", error=DexycbError)
_image = functools.partial(
  manual.image, size_hw=(HEIGHT, WIDTH), dataset="DexYCB", error=DexycbError
)


class _Loader(yaml.SafeLoader):
  """Safe YAML plus the `!!python/tuple` tag the calibration files use."""


_Loader.add_constructor(
  "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
)


@functools.cache
def _yaml(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise DexycbError(f"DexYCB: missing file {path}")
  try:
    doc = yaml.load(path.read_text(), Loader=_Loader)
  except yaml.YAMLError as e:
    raise DexycbError(f"DexYCB: malformed YAML in {path}: {str(e).splitlines()[0]}") from None
  if not isinstance(doc, dict):
    raise DexycbError(f"DexYCB: {path} is not a YAML mapping")
  return doc


def _key(doc: dict, key: str, path):
  if key not in doc:
    raise DexycbError(f"DexYCB: {path} has no '{key}'")
  return doc[key]


def side_of(meta: dict, path) -> str:
  """The sequence's hand, "right" or "left" (meta.yml `mano_sides`: one entry)."""
  sides = _key(meta, "mano_sides", path)
  if not isinstance(sides, list) or len(sides) != 1 or sides[0] not in ("right", "left"):
    raise DexycbError(f"DexYCB: {path}: 'mano_sides' must be ['right'] or ['left'], got {sides}")
  return sides[0]


def num_frames(meta: dict, path) -> int:
  n = _key(meta, "num_frames", path)
  if not isinstance(n, int) or n < 1:
    raise DexycbError(f"DexYCB: {path}: 'num_frames' must be a positive integer, got {n!r}")
  return n


def intrinsics(root: pathlib.Path, serial: str) -> np.ndarray:
  path = root / "calibration" / "intrinsics" / f"{serial}_{WIDTH}x{HEIGHT}.yml"
  color = _key(_yaml(path), "color", path)
  fx, fy, cx, cy = (
    _array(_key(color, k, path), (), path, f"color.{k}") for k in ("fx", "fy", "ppx", "ppy")
  )
  return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def camera_to_world(root: pathlib.Path, extrinsics_id: str, serial: str) -> np.ndarray:
  """T_world_cam [4, 4]: the toolkit maps camera points to the master frame with [R | t]."""
  path = root / "calibration" / f"extrinsics_{extrinsics_id}" / "extrinsics.yml"
  table = _key(_yaml(path), "extrinsics", path)
  Rt = _array(_key(table, serial, path), (12,), path, f"extrinsics.{serial}").reshape(3, 4)
  return manual.rigid(Rt[:, :3], Rt[:, 3])


def betas(root: pathlib.Path, calib: str) -> np.ndarray:
  path = root / "calibration" / f"mano_{calib}" / "mano.yml"
  return _array(_key(_yaml(path), "betas", path), (10,), path, "betas")


def read_labels(path: pathlib.Path) -> dict[str, np.ndarray]:
  """joint_3d [21, 3] (all -1 when unlabelled), joint_2d [21, 2], pose_m [51] of one image."""
  if not path.is_file():
    raise DexycbError(f"DexYCB: missing file {path}")
  try:
    with np.load(path) as z:
      raw = {k: z[k] for k in ("joint_3d", "joint_2d", "pose_m") if k in z.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DexycbError(f"DexYCB: malformed labels {path}: {e}") from None
  out = {}
  for key, shape in (("joint_3d", (1, 21, 3)), ("joint_2d", (1, 21, 2)), ("pose_m", (1, 51))):
    if key not in raw:
      raise DexycbError(f"DexYCB: {path} has no '{key}'")
    out[key] = _array(raw[key], shape, path, key)[0]
  return out


def valid(labels: dict) -> bool:
  return not np.all(labels["joint_3d"] == -1.0)


def scan(root: pathlib.Path, subset: bool) -> dict[str, list[str]]:
  """{subject: its sorted sequence folders}, checked against the release."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DexycbError(f"DexYCB: manual_dir {root} does not exist (config.data.manual_dir)")
  subjects = [s for s in SUBJECTS if (root / s).is_dir()]
  manual.check_count(
    len(subjects), len(SUBJECTS), "subject folders", root, subset, "DexYCB", DexycbError
  )
  out = {}
  for s in subjects:
    seqs = sorted(p.name for p in (root / s).iterdir() if (p / "meta.yml").is_file())
    manual.check_count(
      len(seqs),
      SEQUENCES_PER_SUBJECT,
      "sequences with a meta.yml",
      root / s,
      subset,
      "DexYCB",
      DexycbError,
    )
    out[s] = seqs
  return out


@dataclasses.dataclass
class DexycbConfig(tfds.core.BuilderConfig):
  setup: str = "s0"
  frames: int = 1
  multiview: bool = True
  hands: str = "both"  # or "right"
  subset: bool = False
  mano_dir: str = ""

  @classmethod
  def make(cls, setup="s0", frames=1, multiview=True, hands="both", subset=False, mano_dir=""):
    if setup not in SETUPS:
      raise ValueError(f"dexycb: setup must be one of {sorted(SETUPS)}, got '{setup}'")
    if hands not in ("both", "right"):
      raise ValueError(f"dexycb: hands must be 'both' or 'right', got '{hands}'")
    multiview = bool(multiview) and setup != "s2"  # s2's splits have different cameras
    name = f"{setup}_t{frames}_{'mv' if multiview else 'sv'}" + (
      "_right" if hands == "right" else ""
    )
    name += ("_subset" if subset else "") + ("_mano" if mano_dir else "")
    return cls(
      name=name,
      setup=setup,
      frames=int(frames),
      multiview=multiview,
      hands=hands,
      subset=bool(subset),
      mano_dir=str(mano_dir or ""),
    )


class Dexycb(tfds.core.GeneratorBasedBuilder):
  """DexYCB: 8-camera hand-object grasping sequences with MANO labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The toolkit's setups and splits; multi-view or per-camera clips."}
  BUILDER_CONFIGS = [DexycbConfig.make()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download DexYCB from https://dex-ycb.github.io/ (the subject archives and calibration), "
    "unpack them into one folder, and pass it as config.data.manual_dir."
  )

  def _views(self) -> int:
    return (
      len(SETUPS[self.builder_config.setup]["train"][1]) if self.builder_config.multiview else 1
    )

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    f = tfds.features
    extra = {
      "sequence": f.Text(),
      "frame_ids": f.Tensor(shape=(cfg.frames,), dtype=np.int64),
      "serials": f.Tensor(shape=(self._views(),), dtype=np.object_),
      "is_left": f.Scalar(np.bool_),
    }
    if cfg.mano_dir:
      extra["has_verts"] = f.Tensor(shape=(cfg.frames,), dtype=np.bool_)
    return self.dataset_info_from_configs(
      features=manual.features(
        cfg.frames, self._views(), (HEIGHT, WIDTH), verts=bool(cfg.mano_dir), extra=extra
      ),
      homepage="https://dex-ycb.github.io/",
      citation="Chao et al. DexYCB: A Benchmark for Capturing Hand Grasping of Objects. CVPR 2021.",
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    sequences = scan(root, self.builder_config.subset)
    if self.builder_config.mano_dir:
      for side in ("right", "left") if self.builder_config.hands == "both" else ("right",):
        manual.mano_vertices(
          self.builder_config.mano_dir, side, np.zeros(48), np.zeros(10), np.zeros(3)
        )
    # A declared subset may hold no sequence of a split (TFDS cannot write an empty split).
    present = lambda subjects, seqs: any(
      SUBJECTS[s] in sequences and q < len(sequences[SUBJECTS[s]]) for s in subjects for q in seqs
    )
    return {
      split: self._generate_examples(root, sequences, *spec)
      for split, spec in SETUPS[self.builder_config.setup].items()
      if present(spec[0], spec[2])
    }

  def _generate_examples(self, root, sequences, subject_ids, camera_ids, sequence_ids):
    cfg = self.builder_config
    clip_id = 0
    for si in subject_ids:
      subject = SUBJECTS[si]
      for qi in sequence_ids:
        if subject not in sequences or qi >= len(sequences[subject]):
          continue  # a declared subset
        seq = f"{subject}/{sequences[subject][qi]}"
        meta_path = root / seq / "meta.yml"
        meta = _yaml(meta_path)
        side = side_of(meta, meta_path)
        if cfg.hands == "right" and side != "right":
          continue
        serials = [SERIALS[c] for c in camera_ids]
        missing = sorted(set(serials) - set(map(str, _key(meta, "serials", meta_path))))
        if missing:
          raise DexycbError(f"DexYCB: {meta_path} does not list cameras {missing}")
        groups = [serials] if cfg.multiview else [[s] for s in serials]
        for group in groups:
          for window in _clips(root, seq, group[0], num_frames(meta, meta_path), cfg.frames):
            ex = read_clip(root, seq, meta, group, window, cfg.multiview, cfg.mano_dir)
            yield (
              f"{seq}/{'+'.join(group) if cfg.multiview else group[0]}/{window[0]:06d}",
              {"clip_id": clip_id, "sequence": seq, "frame_ids": np.asarray(window), **ex},
            )
            clip_id += 1


# Our split names -> the toolkit's (its result files index the toolkit's own splits).
TOOLKIT_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def result_offsets(root, setup: str, split: str, subset=False) -> tuple[dict, int]:
  """Where the toolkit's result file puts each image of a split: ({(sequence, serial): the
  index of its frame 0}, the split's image count); frame f of that camera is offset + f. The
  toolkit enumerates the split's subjects, their sequences (both hands, labelled or not),
  cameras, then frames, so every sequence's `num_frames` counts."""
  root = pathlib.Path(root)
  subject_ids, camera_ids, sequence_ids = SETUPS[setup][split]
  sequences = scan(root, subset)
  offsets, n = {}, 0
  for si in subject_ids:
    for qi in sequence_ids:
      if SUBJECTS[si] not in sequences or qi >= len(sequences[SUBJECTS[si]]):
        continue  # a declared subset
      seq = f"{SUBJECTS[si]}/{sequences[SUBJECTS[si]][qi]}"
      count = num_frames(_yaml(root / seq / "meta.yml"), root / seq / "meta.yml")
      for c in camera_ids:
        offsets[(seq, SERIALS[c])] = n
        n += count
  return offsets, n


def _clips(root, seq, serial, count, t):
  """Windows of t consecutive labelled frames (read from one camera: labels are per frame)."""
  labelled = [
    f for f in range(count) if valid(read_labels(root / seq / serial / f"labels_{f:06d}.npz"))
  ]
  return manual.clips_of(labelled, t)


def read_clip(root, seq, meta, serials, frames, multiview, mano_dir) -> dict:
  """One clip's arrays and JPEG bytes [t * v] (frame-major), every file checked."""
  meta_path = root / seq / "meta.yml"
  K = np.stack([intrinsics(root, s) for s in serials])
  if multiview:
    ext = str(_key(meta, "extrinsics", meta_path))
    T_world_cam = np.stack([camera_to_world(root, ext, s) for s in serials])
  else:
    T_world_cam = np.eye(4)[None]
  images, uv_pl, conf, xyz, poses = [], [], [], [], []
  for f in frames:
    joints = []
    for c, s in enumerate(serials):
      path = root / seq / s / f"labels_{f:06d}.npz"
      labels = read_labels(path)
      if not valid(labels):
        raise DexycbError(f"DexYCB: {path} is unlabelled while camera {serials[0]} is labelled")
      joints.append(labels["joint_3d"])
      if c == 0:
        poses.append(labels["pose_m"])
      rel = f"{seq}/{s}/color_{f:06d}.jpg"
      images.append(_image(root / rel))
      u, p = manual.openpose_labels(manual.label_path(root, rel), "DexYCB", DexycbError)
      uv_pl.append(u)
      conf.append(p)
    where = f"{seq} frame {f}"
    xyz.append(manual.fuse_views(np.stack(joints), T_world_cam, where, "DexYCB", DexycbError))
  t, v = len(frames), len(serials)
  T_cam_world = np.linalg.inv(T_world_cam)
  out = {
    "images": images,
    **manual.geometry(
      np.broadcast_to(K, (t, v, 3, 3)),
      np.broadcast_to(T_cam_world, (t, v, 4, 4)),
      xyz,
      (HEIGHT, WIDTH),
    ),
    "uv_pl": np.asarray(uv_pl, np.float32).reshape(t, v, 21, 2),
    "conf": np.asarray(conf, np.float32).reshape(t, v, 21),
    "serials": np.asarray(serials, dtype=object),
    "is_left": side_of(meta, meta_path) == "left",
  }
  if mano_dir:
    side = side_of(meta, meta_path)
    pose = np.asarray(poses)
    b = betas(root, str(_key(meta, "mano_calib", meta_path)[0]))
    cam = manual.mano_vertices(
      mano_dir, side, pose[:, :48], np.broadcast_to(b, (t, 10)), pose[:, 48:], pca=True
    )
    out["verts"] = (cam @ T_world_cam[0, :3, :3].T + T_world_cam[0, :3, 3]).astype(np.float32)
    out["has_verts"] = np.ones(t, bool)
  return out


def builder(data_config, data_dir: str | None = None) -> Dexycb:
  d = data_config
  config = DexycbConfig.make(
    setup=str(d.get("setup", "s0")),
    frames=int(d.frames),
    multiview=int(d.get("views", 8)) > 1,
    hands=str(d.get("hands", "both")),
    subset=bool(d.get("subset", False)),
    mano_dir=str(d.get("mano_dir", "") or ""),
  )
  return manual.make_builder(Dexycb, config, data_dir)
