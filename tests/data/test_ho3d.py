"""The HO3D builder on a fixture written here in the official layout (no real data)."""

import json
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import ust
from handflow import exports
from handflow.data import ho3d, manual, pipeline, prepare
from handflow.eval import submission
from handflow.hand import conventions

TRAIN = {"ABF10": [0, 1, 2], "MC1": [0, 1, 2, 3]}
UNANNOTATED = ("MC1", 1)
EVALUATION = {"SM1": [0, 1]}
CAM = np.array([[614.0, 0, 320.0], [0, 614.0, 240.0], [0, 0, 1]])
BOX = (200.0, 150.0, 330.0, 260.0)  # the evaluation meta's handBoundingBox (x0, y0, x1, y1)


def _joints_gl(rng):
  """HO3D-order joints in the OpenGL camera frame (in front of the camera: z < 0)."""
  return rng.normal(0, 0.03, (21, 3)) + [0, 0, -0.5]


def write_fixture(root: pathlib.Path, seed: int = 0, version: int = 3) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  ext = ho3d.EXTENSION[version]
  gt_xyz, gt_verts = [], []
  for folder, seqs in (("train", TRAIN), ("evaluation", EVALUATION)):
    lines = []
    for seq, frames in seqs.items():
      for sub in ("rgb", "meta"):
        (root / folder / seq / sub).mkdir(parents=True)
      for f in frames:
        lines.append(f"{seq}/{f:04d}")
        meta = {"camMat": CAM, "handBeta": rng.normal(size=10), "handTrans": [0, 0, -0.5]}
        if folder == "train":
          meta["handJoints3D"] = None if (seq, f) == UNANNOTATED else _joints_gl(rng)
          meta["handPose"] = rng.normal(0, 0.2, 48)
        else:  # the evaluation meta holds only the root; the ground truth is separate
          joints = _joints_gl(rng)
          meta["handJoints3D"] = joints[0]
          meta["handBoundingBox"] = np.array(BOX)
          gt_xyz.append(joints.tolist())
          gt_verts.append((rng.normal(0, 0.03, (778, 3)) + [0, 0, -0.5]).tolist())
        with open(root / folder / seq / "meta" / f"{f:04d}.pkl", "wb") as fh:
          pickle.dump(meta, fh, protocol=2)
        img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        data = tf.io.encode_png(img) if ext == "png" else tf.io.encode_jpeg(img)
        (root / folder / seq / "rgb" / f"{f:04d}.{ext}").write_bytes(data.numpy())
    (root / f"{folder}.txt").write_text("\n".join(lines) + "\n")
  (root / "evaluation_xyz.json").write_text(json.dumps(gt_xyz))
  (root / "evaluation_verts.json").write_text(json.dumps(gt_verts))
  return root


def _config(root, data_dir, **data):
  c = ust.get_config("tiny")
  c.data.name, c.data.manual_dir, c.data.subset = "ho3d", str(root), True
  c.data.data_dir, c.data.frames, c.data.views = str(data_dir), 2, 1
  c.data.update(data)
  return c


def _project_ho3d(cam_mat, pts_gl):
  """HO3D's own projection (vis_HO3D.project3DPoints with isOpenGLCoords=True)."""
  flip = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
  p = pts_gl.dot(flip.T).dot(cam_mat.T)
  return p[:, :2] / p[:, 2:]


@pytest.mark.parametrize("version", [2, 3])
def test_clips_frames_order_and_projection(tmp_path, version):
  root = write_fixture(tmp_path / "HO3D", version=version)
  config = _config(root, tmp_path / "tfds", version=version)
  # ABF10: frames 0-1 (frame 2 alone); MC1: frame 1 unannotated -> frames 2-3. SM1: 0-1.
  assert prepare.prepare(config)["splits"] == {"train": 2, "test": 1}
  b = prepare.dataset_builder(config)
  train = {bytes(e["sequence"]).decode(): e for e in tfds.as_numpy(b.as_dataset(split="train"))}
  assert list(train["ABF10"]["frame_ids"]) == [0, 1] and list(train["MC1"]["frame_ids"]) == [2, 3]
  ex = train["MC1"]
  with open(root / "train" / "MC1" / "meta" / "0003.pkl", "rb") as fh:
    meta = pickle.load(fh)
  # uv = HO3D's projection of its OpenGL joints, reordered to OpenPose; the wrist stays first.
  uv_ho3d = _project_ho3d(CAM, meta["handJoints3D"])
  op = np.asarray(ex["uv"][1, 0])
  np.testing.assert_allclose(op[list(conventions.HO3D_FROM_OPENPOSE)], uv_ho3d, atol=1e-2)
  assert ex["xyz"][1, 0, 2] > 0  # OpenCV: in front of the camera is +z
  np.testing.assert_allclose(ex["xyz"][1, 0], meta["handJoints3D"][0] * [1, -1, -1], atol=1e-6)
  assert not ex["has_verts"].any() and ex["images"].shape == (2, 480, 640, 3)
  test = next(iter(tfds.as_numpy(b.as_dataset(split="test"))))
  gt = np.asarray(json.loads((root / "evaluation_verts.json").read_text()))
  np.testing.assert_allclose(test["verts"], gt * [1, -1, -1], atol=1e-6)
  assert test["has_verts"].all()
  # predict's pred.json gives back the evaluation ground truth it was made from: evaluation.txt
  # order, HO3D keypoint order, OpenGL frame.
  arrays = {
    "clip_id": test["clip_id"][None],
    "joints": test["xyz"][None],
    "vertices": test["verts"][None],
  }
  line = exports.write_submission(config, arrays, tmp_path)
  assert line.startswith(f"wrote the HO3D v{version} submission") and "subset" not in line
  joints, verts = submission.read_json_pair(tmp_path / "ho3d_pred.json")
  np.testing.assert_allclose(
    joints, json.loads((root / "evaluation_xyz.json").read_text()), atol=2e-6
  )
  np.testing.assert_allclose(verts, gt, atol=2e-6)


def test_official_sizes_and_named_errors(tmp_path):
  root = write_fixture(tmp_path / "HO3D")
  with pytest.raises(ho3d.Ho3dError, match="78297"):
    ho3d.read_list(root, "train", 3, subset=False)
  path = root / "evaluation_xyz.json"
  path.write_text(path.read_text()[:40])
  with pytest.raises(ho3d.Ho3dError, match="malformed JSON in .*evaluation_xyz.json"):
    prepare.prepare(_config(root, tmp_path / "tfds"))
  root = write_fixture(tmp_path / "HO3D2")
  (root / "train" / "ABF10" / "meta" / "0001.pkl").unlink()
  with pytest.raises(ho3d.Ho3dError, match="ABF10/meta/0001.pkl"):
    prepare.prepare(_config(root, tmp_path / "tfds2"))


def write_multicam(root: pathlib.Path, seed=1, cams=(0, 2, 4), frames=3, wrong_direction=False):
  """A calibrated v3 group (GSF1: sequences GSF10, GSF12, GSF14) added to the fixture: each
  camera's labels are the same world joints in its own OpenGL frame, in HO3D order."""
  from scipy.spatial.transform import Rotation

  rng = np.random.default_rng(seed)
  calib = root / "calibration" / "GSF1" / "calibration"
  calib.mkdir(parents=True)
  np.savetxt(calib / "cam_orders.txt", np.asarray(cams))
  T_world_cam = []
  for i in range(len(cams)):
    R = Rotation.from_rotvec(rng.normal(0, 0.5, 3)).as_matrix()
    T = manual.rigid(R, -0.6 * R[:, 2])  # looking at the origin from 0.6 m
    T_world_cam.append(T)
    np.savetxt(calib / f"trans_{i}.txt", np.linalg.inv(T) if wrong_direction else T)
  lines = (root / "train.txt").read_text().split()
  for f in range(frames):
    world = rng.normal(0, 0.03, (21, 3))
    for cam, T in zip(cams, T_world_cam, strict=True):
      seq = root / "train" / f"GSF1{cam}"
      for sub in ("rgb", "meta"):
        (seq / sub).mkdir(parents=True, exist_ok=True)
      cv = (world - T[:3, 3]) @ T[:3, :3]
      meta = {
        "camMat": CAM,
        "handJoints3D": (cv * [1, -1, -1])[list(conventions.HO3D_FROM_OPENPOSE)],
      }
      with open(seq / "meta" / f"{f:04d}.pkl", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
      img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
      (seq / "rgb" / f"{f:04d}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
      lines.append(f"GSF1{cam}/{f:04d}")
  (root / "train.txt").write_text("\n".join(lines) + "\n")
  return np.asarray(T_world_cam)


def test_v3_multicamera_clips_share_one_world(tmp_path):
  root = write_fixture(tmp_path / "HO3D")
  T_world_cam = write_multicam(root)
  config = _config(root, tmp_path / "tfds", views=3, frames=1)
  # Only the calibrated group makes multi-view clips (3 frames); no evaluation group has one.
  assert prepare.prepare(config)["splits"] == {"train": 3}
  ex = next(iter(tfds.as_numpy(prepare.dataset_builder(config).as_dataset(split="train"))))
  assert ex["sequence"] == b"GSF1" and ex["images"].shape == (3, 480, 640, 3)
  np.testing.assert_allclose(np.linalg.inv(ex["T_cam_world"][0]), T_world_cam, atol=1e-5)
  # Every camera's own labels, projected as HO3D does, are the world joints' projections.
  f = int(ex["frame_ids"][0])
  for c, cam in enumerate((0, 2, 4)):
    with open(root / "train" / f"GSF1{cam}" / "meta" / f"{f:04d}.pkl", "rb") as fh:
      meta = pickle.load(fh)
    uv_ho3d = _project_ho3d(CAM, meta["handJoints3D"])
    np.testing.assert_allclose(
      ex["uv"][0, c][list(conventions.HO3D_FROM_OPENPOSE)], uv_ho3d, atol=1e-2
    )


def test_v3_calibration_in_the_wrong_direction_is_refused(tmp_path):
  root = write_fixture(tmp_path / "HO3D")
  write_multicam(root, wrong_direction=True)
  with pytest.raises(ho3d.Ho3dError, match="disagree"):
    prepare.prepare(_config(root, tmp_path / "tfds", views=3, frames=1))


def test_training_without_pseudo_labels_or_test_split_fails_early(tmp_path):
  root = write_fixture(tmp_path / "HO3D")
  for name in ("evaluation_xyz.json", "evaluation_verts.json"):
    (root / name).unlink()  # HO3D's evaluation ground truth is not public
  config = _config(root, tmp_path / "tfds")
  assert prepare.prepare(config)["splits"] == {"train": 2, "evaluation": 1}
  with pytest.raises(pipeline.DataError, match="has no split 'test'"):
    pipeline.check_splits(config, "train", "test")
  # The unlabelled evaluation list serves predict only, cropped around the meta's hand box.
  with pytest.raises(pipeline.DataError, match="split 'evaluation' has no labels"):
    pipeline.check_splits(config, "train", "evaluation")
  pipeline.check_splits(config, "evaluation", labelled=False)
  batch = next(pipeline.batches(config, "evaluation", train=False, batch_size=1))
  assert np.isnan(batch["xyz"]).all() and not batch["visible"].any()
  A = (batch["K"][0, 0, 0] @ np.linalg.inv(CAM))[:2]  # input -> crop pixels
  centre = A @ [(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2, 1.0]
  side = np.linalg.norm(A[:, 0]) * 1.3 * (BOX[2] - BOX[0])  # the box's long side, padded
  np.testing.assert_allclose(centre, [(32 - 1) / 2] * 2, atol=1e-3)
  np.testing.assert_allclose(side, 32, rtol=1e-3)
  # The server's pred.json from predictions on it: evaluation.txt order, HO3D order, OpenGL.
  config.data.test_split = "evaluation"
  rng = np.random.default_rng(0)
  joints = rng.normal(0, 0.03, (1, 2, 21, 3)) + [0, 0, 0.5]
  arrays = {"clip_id": np.zeros(1, int), "joints": joints, "vertices": np.zeros((1, 2, 778, 3))}
  assert "wrote the HO3D v3 submission" in exports.write_submission(config, arrays, tmp_path)
  got, _ = submission.read_json_pair(tmp_path / "ho3d_pred.json")
  want = joints[0][:, list(conventions.HO3D_FROM_OPENPOSE)] * [1, -1, -1]
  np.testing.assert_allclose(got, want, atol=2e-6)
  # No rgb_2D_keypoints/ files: the first training batch says so instead of training on nothing.
  with pytest.raises(pipeline.DataError, match="handflow.data.detect --dataset=ho3d"):
    next(pipeline.batches(config, "train", train=True, batch_size=2))
