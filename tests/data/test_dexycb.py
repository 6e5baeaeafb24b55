"""The DexYCB builder on a fixture written here in the official layout (no real data)."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import yaml

from configs import ust
from handflow import exports
from handflow.data import dexycb, manual, pipeline, prepare
from handflow.eval import submission
from handflow.geometry import cameras

SUBJECT = dexycb.SUBJECTS[2]  # in s0's train (sequences i % 5 != 4) and test (i % 5 == 4)
SEQUENCES, FRAMES = 5, 3
UNLABELLED = (1, 2)  # (sequence, frame) whose joints are all -1


def write_fixture(root: pathlib.Path, seed: int = 0, wrong_direction=False) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  calib = root / "calibration"
  eyes = rng.normal(size=(8, 3))
  eyes = 0.8 * eyes / np.linalg.norm(eyes, axis=-1, keepdims=True)
  T_cam_world = np.asarray(cameras.look_at(eyes.astype(np.float32), np.zeros((8, 3), np.float32)))
  T_world_cam = np.linalg.inv(T_cam_world)
  (calib / "intrinsics").mkdir(parents=True)
  K = {}
  for c, serial in enumerate(dexycb.SERIALS):
    fx = 600.0 + 10 * c
    K[serial] = np.array([[fx, 0, 320.0 + c], [0, fx, 240.0 - c], [0, 0, 1]])
    color = {"fx": fx, "fy": fx, "ppx": 320.0 + c, "ppy": 240.0 - c}
    (calib / "intrinsics" / f"{serial}_640x480.yml").write_text(yaml.safe_dump({"color": color}))
  stored = T_cam_world if wrong_direction else T_world_cam  # the toolkit's: camera -> world
  extr = {s: stored[c, :3].reshape(-1).tolist() for c, s in enumerate(dexycb.SERIALS)}
  (calib / "extrinsics_20200820_000000").mkdir()
  (calib / "extrinsics_20200820_000000" / "extrinsics.yml").write_text(
    yaml.safe_dump({"extrinsics": extr, "master": dexycb.SERIALS[0]})
  )
  (calib / "mano_20200820_subject3").mkdir()
  betas = rng.normal(size=10).tolist()
  (calib / "mano_20200820_subject3" / "mano.yml").write_text(yaml.safe_dump({"betas": betas}))
  for q in range(SEQUENCES):
    seq = root / SUBJECT / f"20200820_1{q:05d}"
    seq.mkdir(parents=True)
    meta = {
      "serials": list(dexycb.SERIALS),
      "num_frames": FRAMES,
      "mano_sides": ["right"],
      "mano_calib": ["20200820_subject3"],
      "extrinsics": "20200820_000000",
      "ycb_ids": [1],
      "ycb_grasp_ind": 0,
    }
    (seq / "meta.yml").write_text(yaml.safe_dump(meta))
    for f in range(FRAMES):
      xyz = rng.normal(0, 0.04, (21, 3))
      pose_m = rng.normal(0, 0.3, (1, 51))
      for c, serial in enumerate(dexycb.SERIALS):
        (seq / serial).mkdir(exist_ok=True)
        cam = xyz @ T_cam_world[c, :3, :3].T + T_cam_world[c, :3, 3]
        uv = cam @ K[serial].T
        labels = {
          "joint_3d": cam[None].astype(np.float32),
          "joint_2d": (uv[:, :2] / uv[:, 2:])[None].astype(np.float32),
          "pose_m": pose_m.astype(np.float32),
        }
        if (q, f) == UNLABELLED:
          labels["joint_3d"] = -np.ones((1, 21, 3), np.float32)
          labels["joint_2d"] = -np.ones((1, 21, 2), np.float32)
          labels["pose_m"] = np.zeros((1, 51), np.float32)
        np.savez(seq / serial / f"labels_{f:06d}.npz", **labels)
        img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        (seq / serial / f"color_{f:06d}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
  rel = f"{SUBJECT}/20200820_100000/{dexycb.SERIALS[3]}/color_000000.jpg"
  manual.label_path(root, rel).parent.mkdir(parents=True)
  manual.label_path(root, rel).write_text(
    json.dumps(manual.openpose_doc(np.ones((21, 2)), np.ones(21)))
  )
  return root


def _config(root, data_dir, **data):
  c = ust.get_config("tiny")
  c.data.name, c.data.manual_dir, c.data.subset = "dexycb", str(root), True
  c.data.data_dir, c.data.frames, c.data.views = str(data_dir), 1, 8
  c.data.update(data)
  return c


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return write_fixture(tmp_path_factory.mktemp("DexYCB"))


def test_s0_multiview_splits_projections_and_skipped_frames(root, tmp_path):
  config = _config(root, tmp_path / "tfds", frames=2)
  # Train: sequences 0-3; sequence 1's frame 2 is unlabelled, so 4 clips of 2 frames (frames
  # 0-1 of each; frame 2 of 0, 2, 3 has no successor). Test: sequence 4 (i % 5 == 4).
  assert prepare.prepare(config)["splits"] == {"train": 4, "test": 1}
  b = prepare.dataset_builder(config)
  ex = next(iter(tfds.as_numpy(b.as_dataset(split="test"))))
  assert ex["images"].shape == (16, 480, 640, 3) and ex["K"].shape == (2, 8, 3, 3)
  # The world is the master frame: projecting world joints with the stored cameras gives every
  # camera's own joint_2d label.
  seq = root / SUBJECT / "20200820_100004"
  for c, serial in enumerate(dexycb.SERIALS):
    for i, f in enumerate(ex["frame_ids"]):
      want = np.load(seq / serial / f"labels_{f:06d}.npz")["joint_2d"][0]
      np.testing.assert_allclose(ex["uv"][i, c], want, atol=1e-2)
  assert not ex["is_left"] and list(ex["serials"]) == [s.encode() for s in dexycb.SERIALS]
  # The pipeline crops the 640 x 480 images around the pseudo-labels (none here: the whole
  # image) and moves the cameras with them: uv stays the projection of the world joints.
  batch = next(pipeline.batches(config, "test", train=False, batch_size=1))
  assert batch["images"].shape == (1, 2, 8, 32, 32, 3)
  xyz = np.broadcast_to(batch["xyz"][:, :, None], (1, 2, 8, 21, 3))
  uv, _ = cameras.world_to_image(batch["K"], batch["T_cam_world"], xyz)
  np.testing.assert_allclose(uv, batch["uv"], atol=1e-3)
  # No detection: the crop holds the whole (wide) image, so every joint inside it stays inside.
  inside = batch["visible"][0]
  assert inside.any() and np.all((batch["uv"][0][inside] >= 0) & (batch["uv"][0][inside] <= 31))
  # predict's result file: world predictions moved into each camera, at the toolkit's index
  # (subject 2 is s0 test's first present subject: camera c's frame f is line c * FRAMES + f).
  arrays = {
    "clip_id": ex["clip_id"][None],
    "joints": ex["xyz"][None],
    "vertices": np.zeros((1, 2, 5, 3)),
  }
  line = exports.write_submission(config, arrays, tmp_path)
  assert "16 of the split's 24 images" in line and "data.frames=1" in line
  index, joints = submission.read_dexycb(tmp_path / "dexycb_s0_test_results.txt")
  want = [c * FRAMES + f for c in range(8) for f in (0, 1)]
  assert sorted(index.tolist()) == want and list(index) == sorted(index)
  for i, row in zip(index, joints, strict=True):
    serial, f = dexycb.SERIALS[i // FRAMES], i % FRAMES
    lab = np.load(seq / serial / f"labels_{f:06d}.npz")["joint_3d"][0]
    np.testing.assert_allclose(row, lab, atol=2e-4)  # 0.1 mm text precision + float32


def test_s2_is_per_camera_and_labels_are_read(root, tmp_path):
  config = _config(root, tmp_path / "tfds", setup="s2", views=1)
  # s2 holds out cameras: train has 6, validation camera 6, test camera 7; 14 labelled frames.
  assert prepare.prepare(config)["splits"] == {"train": 6 * 14, "validation": 14, "test": 14}
  b = prepare.dataset_builder(config)
  train = list(tfds.as_numpy(b.as_dataset(split="train")))
  ex = next(
    e
    for e in train
    if e["sequence"] == f"{SUBJECT}/20200820_100000".encode()
    and e["serials"][0] == dexycb.SERIALS[3].encode()
    and e["frame_ids"][0] == 0
  )
  np.testing.assert_allclose(ex["uv_pl"][0, 0], 1.0) and np.testing.assert_allclose(ex["conf"], 1.0)
  np.testing.assert_array_equal(ex["T_cam_world"][0, 0], np.eye(4))
  lab = np.load(root / SUBJECT / "20200820_100000" / dexycb.SERIALS[3] / "labels_000000.npz")
  np.testing.assert_allclose(ex["xyz"][0], lab["joint_3d"][0], atol=1e-6)
  # Single-image predictions (image_id, camera-frame joints) of s2's test camera: sequence q's
  # frame f is line q * FRAMES + f of the toolkit's list; the unlabelled image has none.
  test = list(tfds.as_numpy(b.as_dataset(split="test")))
  arrays = {
    "image_id": np.array([e["clip_id"] for e in test]),
    "joints_cam": np.stack([e["xyz"] for e in test]),
    "vertices_cam": np.zeros((len(test), 1, 5, 3)),
  }
  line = exports.write_submission(config, arrays, tmp_path)
  assert "14 of the split's 15 images" in line and "data.frames" not in line
  index, joints = submission.read_dexycb(tmp_path / "dexycb_s2_test_results.txt")
  assert index.tolist() == [i for i in range(15) if divmod(i, FRAMES) != UNLABELLED]
  q, f = divmod(int(index[5]), FRAMES)
  seq = root / SUBJECT / f"20200820_1{q:05d}" / dexycb.SERIALS[7]
  np.testing.assert_allclose(
    joints[5], np.load(seq / f"labels_{f:06d}.npz")["joint_3d"][0], atol=2e-4
  )


def test_missing_file_and_count_are_named(root, tmp_path):
  with pytest.raises(dexycb.DexycbError, match="subject folders"):
    dexycb.scan(root, subset=False)
  broken = write_fixture(tmp_path / "broken")
  (broken / "calibration" / "intrinsics" / f"{dexycb.SERIALS[5]}_640x480.yml").unlink()
  with pytest.raises(dexycb.DexycbError, match=f"{dexycb.SERIALS[5]}_640x480.yml"):
    prepare.prepare(_config(broken, tmp_path / "tfds"))


def test_mano_meshes_follow_manopth_pca_convention(root, tmp_path):
  """pose_m = global axis-angle, 45 PCA coefficients (relative to hands_mean), translation;
  checked against the loop-based NumPy MANO, then moved to the master (world) frame."""
  from handflow.hand.testing import random_mano_arrays
  from tests.hand.conftest import write_fake_mano_pickle
  from tests.hand.numpy_lbs import mano_forward

  arrays = random_mano_arrays()
  (tmp_path / "mano").mkdir()
  write_fake_mano_pickle(tmp_path / "mano" / "MANO_RIGHT.pkl", arrays)
  seq = f"{SUBJECT}/20200820_100000"
  meta = yaml.safe_load((root / seq / "meta.yml").read_text())
  serials = list(dexycb.SERIALS[2:4])
  ex = dexycb.read_clip(root, seq, meta, serials, [1], True, str(tmp_path / "mano"))
  lab = np.load(root / seq / serials[0] / "labels_000001.npz")
  pose_m = lab["pose_m"][0].astype(np.float64)
  finger = pose_m[3:48] @ arrays["hands_components"][:45] + arrays["hands_mean"]
  betas = yaml.safe_load((root / "calibration/mano_20200820_subject3/mano.yml").read_text())
  cam, _ = mano_forward(
    arrays, np.concatenate([pose_m[:3], finger]).reshape(16, 3), np.asarray(betas["betas"])
  )
  cam += pose_m[48:]
  T_world_cam = np.linalg.inv(ex["T_cam_world"][0, 0])
  np.testing.assert_allclose(
    ex["verts"][0], cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3], atol=5e-5
  )


def test_truncated_labels_and_malformed_yaml_are_named(tmp_path):
  root = write_fixture(tmp_path / "DexYCB")
  labels = root / SUBJECT / "20200820_100002" / dexycb.SERIALS[0] / "labels_000001.npz"
  labels.write_bytes(labels.read_bytes()[:100])
  with pytest.raises(dexycb.DexycbError, match="malformed labels .*labels_000001.npz"):
    prepare.prepare(_config(root, tmp_path / "tfds"))
  root = write_fixture(tmp_path / "DexYCB2")
  (root / SUBJECT / "20200820_100003" / "meta.yml").write_text("serials: [1, 2\nnum_frames: 3")
  with pytest.raises(dexycb.DexycbError, match="malformed YAML in .*20200820_100003/meta.yml"):
    prepare.prepare(_config(root, tmp_path / "tfds2"))


def test_extrinsics_in_the_wrong_direction_are_refused(tmp_path):
  root = write_fixture(tmp_path / "DexYCB", wrong_direction=True)
  with pytest.raises(dexycb.DexycbError, match="disagree by"):
    prepare.prepare(_config(root, tmp_path / "tfds"))


def test_bad_meta_values_are_named(tmp_path):
  root = write_fixture(tmp_path / "DexYCB")
  path = root / SUBJECT / "20200820_100001" / "meta.yml"
  meta = yaml.safe_load(path.read_text())
  path.write_text(yaml.safe_dump({**meta, "mano_sides": []}))
  with pytest.raises(dexycb.DexycbError, match="20200820_100001/meta.yml: 'mano_sides'"):
    prepare.prepare(_config(root, tmp_path / "tfds"))
