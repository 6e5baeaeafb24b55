"""HO-3D v2 / v3 (Hampali et al., CVPR 2020) as a TFDS builder over the user's download.

Read from `config.data.manual_dir` in the official layout (REFERENCE §3):

  train.txt, evaluation.txt            one "SEQ/FRAME" per line (the official lists)
  train/SEQ/rgb/FRAME.png|jpg          640 x 480 (v2: PNG, v3: JPEG)
  train/SEQ/meta/FRAME.pkl             handPose [48], handBeta [10], handTrans [3], camMat,
                                       handJoints3D [21, 3] (HO3D order, OpenGL camera frame)
  evaluation/SEQ/...                   the same; meta has only the root joint
  evaluation_xyz.json, evaluation_verts.json   optional evaluation ground truth (evaluation.txt
                                       order, HO3D order, OpenGL frame) where the user has it
  rgb_2D_keypoints/{train,evaluation}/SEQ/rgb/FRAME.json   optional OpenPose pseudo-labels

Examples have synthetic_hands' structure. With one view (`views=1`), a clip is T consecutive
listed frames of one sequence, in the OpenCV camera frame (y and z of OpenGL flipped;
T_cam_world = I), keypoints reordered to OpenPose. With `views=V > 1` (v3), a clip is T
simultaneous frames of the first V cameras of each calibrated multi-camera group, in the
group's common frame (`ho3d_cameras`).
`train` comes from train.txt (frames without a hand annotation are skipped); `test` from
evaluation.txt when the evaluation ground truth is present. Without it (HO3D scores evaluation on
its server) the same list becomes the unlabelled `evaluation` split: joints NaN (`visible` all
false, `has_verts` false), for `--mode=predict --config.data.test_split=evaluation`, which
writes the server's pred.json. Every clip carries the meta's `handBoundingBox` as `box [t, v,
4]` (x0, y0, x1, y1 pixels; NaN where the meta has none): the pipeline crops around it where no
pseudo-label is confident. With `mano_dir`, training clips carry the fits' meshes (`handPose` is
absolute: flat_hand_mean=True, as HO3D's own forward kinematics). The
official list sizes are enforced unless `subset` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import pickle

import numpy as np
import tensorflow_datasets as tfds

from handflow.data import ho3d_cameras, manual
from handflow.geometry import cameras as camera_geometry
from handflow.hand import conventions

HEIGHT, WIDTH = 480, 640
# Official list sizes (the HO3D scorer asserts them): version -> (train, evaluation).
SIZES = {2: (66_034, 11_524), 3: (78_297, 20_137)}
EXTENSION = {2: "png", 3: "jpg"}
UNLABELLED_SPLITS = ("evaluation",)  # predict only (pipeline.check_splits)
OPENPOSE_FROM_HO3D = tuple(conventions.HO3D_FROM_OPENPOSE.index(i) for i in range(21))


class Ho3dError(manual.ManualDataError):
  """An HO3D download that is missing files or has malformed ones (names the file)."""


_array = functools.partial(manual.array, dataset="HO3D", error=Ho3dError)
_image = functools.partial(manual.image, size_hw=(HEIGHT, WIDTH), dataset="HO3D", error=Ho3dError)


def read_list(root: pathlib.Path, name: str, version: int, subset: bool) -> list[tuple[str, int]]:
  """[(sequence, frame)] of `train.txt` / `evaluation.txt`, checked against the official size."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise Ho3dError(f"HO3D: manual_dir {root} does not exist (config.data.manual_dir)")
  path = root / f"{name}.txt"
  if not path.is_file():
    raise Ho3dError(f"HO3D: missing file {path}")
  out = []
  for n, line in enumerate(path.read_text().split("\n"), 1):
    if not line.strip():
      continue
    seq, _, frame = line.strip().partition("/")
    if not seq or not frame.isdigit():
      raise Ho3dError(f"HO3D: {path} line {n}: expected SEQ/FRAME, got '{line.strip()}'")
    out.append((seq, int(frame)))
  expected = SIZES[version][0 if name == "train" else 1]
  manual.check_count(len(out), expected, "entries", path, subset, "HO3D", Ho3dError)
  return out


def read_meta(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise Ho3dError(f"HO3D: missing file {path}")
  try:
    with open(path, "rb") as fh:
      meta = pickle.load(fh, encoding="latin1")  # the release's pickles come from Python 2
  except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as e:
    raise Ho3dError(f"HO3D: malformed pickle {path}: {e}") from None
  if not isinstance(meta, dict):
    raise Ho3dError(f"HO3D: {path} is not a dict")
  return meta


def annotated(meta: dict) -> bool:
  joints = meta.get("handJoints3D")
  return joints is not None and np.size(joints) == 63


@dataclasses.dataclass
class Ho3dConfig(tfds.core.BuilderConfig):
  ho3d_version: int = 3
  frames: int = 1
  views: int = 1  # > 1: v3's synchronised multi-camera groups (ho3d_cameras)
  subset: bool = False
  mano_dir: str = ""

  @classmethod
  def make(cls, version=3, frames=1, views=1, subset=False, mano_dir="") -> Ho3dConfig:
    if version not in SIZES:
      raise ValueError(f"ho3d: version must be 2 or 3, got {version}")
    if views > 1 and version != 3:
      raise ValueError(f"ho3d: multi-camera clips (views={views}) exist in v3 only")
    name = f"v{version}_t{frames}" + (f"_mv{views}" if views > 1 else "")
    name += ("_subset" if subset else "") + ("_mano" if mano_dir else "")
    return cls(
      name=name,
      ho3d_version=int(version),
      frames=int(frames),
      views=int(views),
      subset=bool(subset),
      mano_dir=str(mano_dir or ""),
    )


class Ho3d(tfds.core.GeneratorBasedBuilder):
  """HO-3D: single-camera hand-object sequences with MANO fits (v2, v3)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "train.txt / evaluation.txt clips, OpenCV frame, OpenPose order.",
    "1.1.0": "The unlabelled `evaluation` split where the ground truth is absent; `box`.",
  }
  BUILDER_CONFIGS = [Ho3dConfig.make()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download HO-3D (v2 or v3) from https://github.com/shreyashampali/ho3d, unpack it, and pass "
    "its root as config.data.manual_dir (set config.data.version)."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    f = tfds.features
    extra = {
      "sequence": f.Text(),  # multi-camera clips: the group (e.g. ABF1)
      "frame_ids": f.Tensor(shape=(cfg.frames,), dtype=np.int64),
      "box": f.Tensor(shape=(cfg.frames, cfg.views, 4), dtype=np.float32),
    }
    return self.dataset_info_from_configs(
      features=manual.features(
        cfg.frames,
        cfg.views,
        (HEIGHT, WIDTH),
        encoding=EXTENSION[cfg.ho3d_version].replace("jpg", "jpeg"),
        verts=True,
        extra={**extra, "has_verts": f.Tensor(shape=(cfg.frames,), dtype=np.bool_)},
      ),
      homepage="https://github.com/shreyashampali/ho3d",
      citation="Hampali, Rad, Oberweger, Lepetit. HOnnotate: A method for 3D Annotation of "
      "Hand and Object Poses. CVPR 2020.",
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = pathlib.Path(dl_manager.manual_dir)
    train = read_list(root, "train", cfg.ho3d_version, cfg.subset)
    evaluation = read_list(root, "evaluation", cfg.ho3d_version, cfg.subset)
    if cfg.mano_dir:
      manual.mano_vertices(cfg.mano_dir, "right", np.zeros(48), np.zeros(10), np.zeros(3))
    gt = [root / "evaluation_xyz.json", root / "evaluation_verts.json"]
    has_gt = any(p.exists() for p in gt)
    if cfg.views > 1:
      groups = ho3d_cameras.camera_groups(root, Ho3dError)
      usable = {g: cams[: cfg.views] for g, cams in groups.items() if len(cams) >= cfg.views}
      if not usable:
        raise Ho3dError(
          f"HO3D: no calibrated group under {root / 'calibration'} has {cfg.views} cameras "
          f"(found { ({g: len(c) for g, c in groups.items()}) }); set config.data.views"
        )
      splits = {"train": self._generate_multiview(root, "train", train, usable, None)}
      if has_gt:
        xyz = manual.read_json(gt[0], "HO3D", Ho3dError)  # keypoints only: small
        if not isinstance(xyz, list) or len(xyz) != len(evaluation):
          raise Ho3dError(f"HO3D: {gt[0]} must list one entry per line of evaluation.txt")
        rows = dict(zip(evaluation, xyz, strict=True))
        splits["test"] = self._generate_multiview(root, "evaluation", evaluation, usable, rows)
      else:
        splits["evaluation"] = self._generate_multiview(root, "evaluation", evaluation, usable, {})
      return {k: v for k, v in splits.items() if k == "train" or _any_in(evaluation, usable)}
    splits = {"train": self._generate_examples(root, "train", train, None)}
    if has_gt:
      splits["test"] = self._generate_examples(root, "evaluation", evaluation, gt)
    else:
      splits["evaluation"] = self._generate_examples(root, "evaluation", evaluation, None, False)
    return splits

  def _generate_multiview(self, root, folder, entries, groups, gt_xyz):
    """Clips of T consecutive frames listed (and, for training, annotated) in every camera of
    a calibrated group, in the group's common frame. gt_xyz: None (training), the evaluation
    ground truth by (sequence, frame), or {} (the unlabelled evaluation list)."""
    cfg = self.builder_config
    if gt_xyz is None:  # training: every camera's frame must be annotated
      keep = lambda seq, f: annotated(read_meta(_meta_path(root, folder, seq, f)))
    else:
      keep = lambda seq, f: True
    clip_id = 0
    for group, cams in sorted(groups.items()):
      for frames in ho3d_cameras.windows(entries, cams, cfg.frames, keep):
        rows = None
        if gt_xyz:
          rows = {
            (seq, f): (
              _array(gt_xyz[(seq, f)], (21, 3), root / "evaluation_xyz.json", f"{seq}/{f}"),
              None,
            )
            for seq, _ in cams
            for f in frames
          }
        ex = read_clip(root, folder, cams, frames, cfg, rows, labelled=gt_xyz != {})
        yield (
          f"{folder}/{group}/{frames[0]:04d}",
          {"clip_id": clip_id, "sequence": group, "frame_ids": np.asarray(frames), **ex},
        )
        clip_id += 1

  def _generate_examples(self, root, folder, entries, gt, labelled=True):
    """Clips of T consecutive listed frames, in the list's order. The evaluation ground truth
    (one row per list entry) is streamed along, so one clip is held at a time; `labelled`
    False: the unlabelled evaluation list (every listed frame, no joints)."""
    cfg = self.builder_config
    rows = iter([None] * len(entries))
    if gt is not None:
      streams = [manual.iter_json_array(p, "HO3D", Ho3dError) for p in gt]
      rows = zip(*streams, strict=False)
    window, clip_id, n = [], 0, 0
    for (seq, frame), row in zip(entries, rows, strict=False):
      n += 1
      if labelled and gt is None and not annotated(read_meta(_meta_path(root, folder, seq, frame))):
        window = []  # training: a frame without a hand annotation breaks the clip
        continue
      if window and (window[-1][0] != seq or window[-1][1] != frame - 1):
        window = []
      if row is not None:
        name = f"{seq}/{frame:04d}"
        row = (
          _array(row[0], (21, 3), gt[0], name),
          _array(row[1], (manual.NUM_VERTS, 3), gt[1], name),
        )
      window.append((seq, frame, row))
      if len(window) == cfg.frames:
        frames = np.asarray([f for _, f, _ in window])
        rows = {(seq, f): r for _, f, r in window if r is not None}
        ex = read_clip(root, folder, [(seq, np.eye(4))], list(frames), cfg, rows, labelled)
        yield (
          f"{folder}/{seq}/{frames[0]:04d}",
          {"clip_id": clip_id, "sequence": seq, "frame_ids": frames, **ex},
        )
        clip_id, window = clip_id + 1, []
    if gt is not None and n != len(entries):
      raise Ho3dError(f"HO3D: {gt[0]} / {gt[1]} have {n} entries, evaluation.txt {len(entries)}")


def evaluation_rows(root, version: int, subset: bool) -> dict[tuple[str, int], int]:
  """{(sequence, frame): its line in evaluation.txt}: the row order of HO3D's pred.json."""
  return {e: i for i, e in enumerate(read_list(root, "evaluation", version, subset))}


def _meta_path(root, folder, seq, frame):
  return root / folder / seq / "meta" / f"{frame:04d}.pkl"


def _to_opencv_openpose(points_gl):
  """[..., 21, 3] HO3D order, OpenGL camera frame -> OpenPose order, OpenCV camera frame."""
  return camera_geometry.opengl_to_opencv(np.asarray(points_gl))[..., OPENPOSE_FROM_HO3D, :]


def _any_in(entries, groups) -> bool:
  seqs = {seq for cams in groups.values() for seq, _ in cams}
  return any(seq in seqs for seq, _ in entries)


def read_clip(root, folder, cameras, frames, cfg, rows=None, labelled=True) -> dict:
  """One clip's arrays and images [t * v], every file checked. cameras: [(sequence,
  T_world_cam)] (one camera with the identity for single-view clips); rows: {(sequence,
  frame): (joints, verts or None)} evaluation ground truth in HO3D's frame and order;
  labelled False: joints NaN, no mesh (the unlabelled evaluation list)."""
  ext = EXTENSION[cfg.ho3d_version]
  rows = rows or {}
  T_world_cam = np.stack([T for _, T in cameras])
  K, xyz, verts, has_verts, images, uv_pl, conf, box = [], [], [], [], [], [], [], []
  for f in frames:
    joints, meshes = [], []
    for seq, _ in cameras:
      path = _meta_path(root, folder, seq, f)
      meta = read_meta(path)
      K.append(_array(meta.get("camMat"), (3, 3), path, "camMat"))
      has_box = meta.get("handBoundingBox") is not None
      box.append(
        _array(meta["handBoundingBox"], (4,), path, "handBoundingBox") if has_box else [np.nan] * 4
      )
      if not labelled:
        joints_gl, verts_gl = np.full((21, 3), np.nan), None
      elif (seq, f) in rows:
        joints_gl, verts_gl = rows[(seq, f)]
      else:
        joints_gl = _array(meta.get("handJoints3D"), (21, 3), path, "handJoints3D")
        verts_gl = None
        if cfg.mano_dir:
          pose = _array(meta.get("handPose"), (48,), path, "handPose")
          beta = _array(meta.get("handBeta"), (10,), path, "handBeta")
          trans = _array(meta.get("handTrans"), (3,), path, "handTrans")
          verts_gl = manual.mano_vertices(
            cfg.mano_dir, "right", pose, beta, trans, flat_hand_mean=True
          )
      joints.append(_to_opencv_openpose(joints_gl))
      meshes.append(None if verts_gl is None else camera_geometry.opengl_to_opencv(verts_gl))
      rel = f"{folder}/{seq}/rgb/{f:04d}.{ext}"
      images.append(_image(root / rel))
      u, c = manual.openpose_labels(manual.label_path(root, rel), "HO3D", Ho3dError)
      uv_pl.append(u)
      conf.append(c)
    where = f"{folder}/{'+'.join(s for s, _ in cameras)} frame {f}"
    xyz.append(manual.fuse_views(np.stack(joints), T_world_cam, where, "HO3D", Ho3dError))
    # The mesh of the first camera's fit, moved to the common frame.
    has_verts.append(meshes[0] is not None)
    R, t0 = T_world_cam[0, :3, :3], T_world_cam[0, :3, 3]
    verts.append(meshes[0] @ R.T + t0 if meshes[0] is not None else np.zeros((manual.NUM_VERTS, 3)))
  t, v = len(frames), len(cameras)
  T = np.broadcast_to(np.linalg.inv(T_world_cam), (t, v, 4, 4))
  return {
    "images": images,
    **manual.geometry(np.reshape(K, (t, v, 3, 3)), T, xyz, (HEIGHT, WIDTH)),
    "uv_pl": np.asarray(uv_pl, np.float32).reshape(t, v, 21, 2),
    "conf": np.asarray(conf, np.float32).reshape(t, v, 21),
    "verts": np.asarray(verts, np.float32),
    "has_verts": np.asarray(has_verts),
    "box": np.asarray(box, np.float32).reshape(t, v, 4),
  }


def builder(data_config, data_dir: str | None = None) -> Ho3d:
  d = data_config
  config = Ho3dConfig.make(
    version=int(d.get("version", 3)),
    frames=int(d.frames),
    views=int(d.get("views", 1)),
    subset=bool(d.get("subset", False)),
    mano_dir=str(d.get("mano_dir", "") or ""),
  )
  return manual.make_builder(Ho3d, config, data_dir)
