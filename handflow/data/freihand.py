"""FreiHAND v2 (Zimmermann et al., ICCV 2019) as a TFDS builder over the user's download.

Read from `config.data.manual_dir` in the official layout (REFERENCE §3):

  training/rgb/{i:08d}.jpg      224 x 224; 4 versions x 32,560: image i shows annotation
                                i mod 32,560 (green screen, HOM, sample and auto backgrounds)
  training_{K,xyz,mano,verts,scale}.json   one entry per annotation (camera frame, metres)
  evaluation/rgb/{i:08d}.jpg    3,960 images
  evaluation_{K,xyz,mano,verts,scale}.json
  rgb_2D_keypoints/{training,evaluation}/rgb/{i:08d}.json   optional OpenPose pseudo-labels

Examples have synthetic_hands' structure with one frame and one view (`manual.features`): the
world frame is the camera's (T_cam_world = I), `verts` are the released meshes, and `version`
(0-3) / `annotation` say which background and which annotation an image has. Splits: `train`
(130,240 images) and `test` (the 3,960 evaluation images). The official sizes are enforced
unless `subset` is set; the ~1 GB vertex files are streamed (`manual.iter_json_array`), so the
build holds one mesh at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from handflow.data import manual

TRAIN_ANNOTATIONS = 32_560
VERSIONS = 4
EVAL_SAMPLES = 3_960
IMAGE_SIZE = 224
SPLITS = {"train": "training", "test": "evaluation"}


class FreihandError(manual.ManualDataError):
  """A FreiHAND download that is missing files or has malformed ones (names the file)."""


_read_json = functools.partial(manual.read_json, dataset="FreiHAND", error=FreihandError)
_array = functools.partial(manual.array, dataset="FreiHAND", error=FreihandError)
_image = functools.partial(
  manual.image, size_hw=(IMAGE_SIZE, IMAGE_SIZE), dataset="FreiHAND", error=FreihandError
)


@dataclasses.dataclass
class FreihandConfig(tfds.core.BuilderConfig):
  subset: bool = False

  @classmethod
  def make(cls, subset: bool = False) -> FreihandConfig:
    return cls(name="v2" + ("_subset" if subset else ""), subset=subset)


def read_annotations(root: pathlib.Path, prefix: str, subset: bool) -> dict[str, np.ndarray]:
  """The small per-sample files of one split ({K [n, 3, 3], xyz [n, 21, 3], scale [n],
  mano [n, 61]}), checked against each other and the official size."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FreihandError(f"FreiHAND: manual_dir {root} does not exist (config.data.manual_dir)")
  out = {}
  for key, shape in (("K", (None, 3, 3)), ("xyz", (None, 21, 3)), ("scale", (None,))):
    path = root / f"{prefix}_{key}.json"
    out[key] = _array(_read_json(path), shape, path, key)
  path = root / f"{prefix}_mano.json"
  out["mano"] = _array(_read_json(path), (None, 1, 61), path, "mano")[:, 0]
  n = len(out["K"])
  expected = TRAIN_ANNOTATIONS if prefix == "training" else EVAL_SAMPLES
  manual.check_count(
    n, expected, "samples", root / f"{prefix}_K.json", subset, "FreiHAND", FreihandError
  )
  for key, a in out.items():
    if len(a) != n:
      raise FreihandError(
        f"FreiHAND: {root / f'{prefix}_{key}.json'} has {len(a)} samples, {prefix}_K.json has {n}"
      )
  return out


class Freihand(tfds.core.GeneratorBasedBuilder):
  """FreiHAND v2: single RGB images of hands with MANO fits (training and evaluation)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Training (4 versions) and evaluation, with K, xyz, MANO, verts."}
  BUILDER_CONFIGS = [FreihandConfig.make()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download FreiHAND v2 (and its evaluation annotations) from "
    "https://lmb.informatik.uni-freiburg.de/resources/datasets/FreihandDataset.en.html, unpack "
    "it, and pass its root as config.data.manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    extra = {
      "annotation": f.Scalar(np.int64),
      "version": f.Scalar(np.int64),
      "scale": f.Scalar(np.float32),
      "mano": f.Tensor(shape=(61,), dtype=np.float32),  # 48 pose, 10 shape, 2 uv root, 1 scale
    }
    return self.dataset_info_from_configs(
      features=manual.features(1, 1, (IMAGE_SIZE, IMAGE_SIZE), verts=True, extra=extra),
      homepage="https://lmb.informatik.uni-freiburg.de/projects/freihand/",
      citation="Zimmermann, Ceylan, Yang, Russell, Argus, Brox. FreiHAND: A Dataset for "
      "Markerless Capture of Hand Pose and Shape from Single RGB Images. ICCV 2019.",
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    subset = self.builder_config.subset
    # Both splits' small files are checked before any image is read.
    ann = {split: read_annotations(root, prefix, subset) for split, prefix in SPLITS.items()}
    return {split: self._generate_examples(root, split, ann[split]) for split in SPLITS}

  def _generate_examples(self, root, split, ann):
    prefix = SPLITS[split]
    n = len(ann["K"])
    versions = VERSIONS if split == "train" else 1
    verts_path = root / f"{prefix}_verts.json"
    count = 0
    for i, verts in enumerate(manual.iter_json_array(verts_path, "FreiHAND", FreihandError)):
      if i >= n:
        raise FreihandError(f"FreiHAND: {verts_path} has more meshes than {prefix}_K.json ({n})")
      verts = _array(verts, (manual.NUM_VERTS, 3), verts_path, f"element {i}")
      for version in range(versions):
        image_id = i + version * n
        rel = f"{prefix}/rgb/{image_id:08d}.jpg"
        uv_pl, conf = manual.openpose_labels(
          manual.label_path(root, rel), "FreiHAND", FreihandError
        )
        yield (
          image_id,
          {
            "clip_id": image_id,
            "annotation": i,
            "version": version,
            "images": [_image(root / rel)],
            **manual.geometry(
              ann["K"][i][None, None],
              np.eye(4)[None, None],
              ann["xyz"][i][None],
              (IMAGE_SIZE, IMAGE_SIZE),
            ),
            "uv_pl": np.asarray(uv_pl, np.float32)[None, None],
            "conf": np.asarray(conf, np.float32)[None, None],
            "verts": np.asarray(verts, np.float32)[None],
            "scale": np.float32(ann["scale"][i]),
            "mano": np.asarray(ann["mano"][i], np.float32),
          },
        )
      count += 1
    if count != n:
      raise FreihandError(f"FreiHAND: {verts_path} has {count} meshes, {prefix}_K.json has {n}")


def builder(data_config, data_dir: str | None = None) -> Freihand:
  config = FreihandConfig.make(bool(data_config.get("subset", False)))
  return manual.make_builder(Freihand, config, data_dir)
