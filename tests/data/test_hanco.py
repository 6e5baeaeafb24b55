"""The HanCo builder on a fixture written here in the official layout (no real data)."""

import json
import pathlib

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import ust
from handflow.data import hanco, manual, pipeline, prepare
from handflow.geometry import cameras

FRAMES = {0: [0, 1, 2, 3, 5], 1201: [0, 1]}  # sequence -> valid frames (seq 1201 is test)
MISSING_LABELS = {(0, 1, 3)}  # (sequence, frame, camera) without an OpenPose file


def write_fixture(root: pathlib.Path, seed: int = 0):
  """A HanCo-layout directory with two sequences, 8 cameras, 224 px JPEGs and pseudo-labels."""
  rng = np.random.default_rng(seed)
  n_seq = max(FRAMES) + 1
  valid = [[f in FRAMES.get(s, []) for f in range(6)] if s in FRAMES else [] for s in range(n_seq)]
  (root / "meta.json").parent.mkdir(parents=True, exist_ok=True)
  has_fit = [[f != 2 for f in range(len(v))] for v in valid]  # frame 2 has no fit
  meta = {"is_valid": valid, "is_train": valid, "has_fit": has_fit}
  (root / "meta.json").write_text(json.dumps(meta))
  for sid, frames in FRAMES.items():
    eyes = rng.normal(size=(8, 3))
    eyes = 0.6 * eyes / np.linalg.norm(eyes, axis=-1, keepdims=True)
    T = np.asarray(cameras.look_at(eyes.astype(np.float32), np.zeros((8, 3), np.float32)))
    K = np.broadcast_to(np.array([[400.0, 0, 112], [0, 400.0, 112], [0, 0, 1]]), (8, 3, 3))
    for fid in frames:
      name = f"{sid:04d}/{fid:08d}.json"
      xyz = rng.normal(size=(21, 3)) * 0.04
      fit = {
        "poses": rng.normal(0, 0.3, (1, 48)).tolist(),
        "shapes": rng.normal(0, 1, (1, 10)).tolist(),
        "global_t": rng.normal(0, 0.05, (1, 1, 3)).tolist(),
      }
      docs = (("calib", {"K": K.tolist(), "M": T.tolist()}), ("xyz", xyz.tolist()), ("shape", fit))
      for sub, doc in docs:
        (root / sub / name).parent.mkdir(parents=True, exist_ok=True)
        if sub != "shape" or fid != 2:
          (root / sub / name).write_text(json.dumps(doc))
      uv, _ = cameras.world_to_image(K, T, np.broadcast_to(xyz, (8, 21, 3)))
      for c in range(8):
        rel = f"{sid:04d}/cam{c}/{fid:08d}"
        img = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
        for d in ("rgb", "rgb_merged"):
          (root / d / f"{rel}.jpg").parent.mkdir(parents=True, exist_ok=True)
          (root / d / f"{rel}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
        if (sid, fid, c) in MISSING_LABELS:
          continue
        kp = np.concatenate([np.asarray(uv[c]) + 1.0, np.full((21, 1), 0.8)], -1)
        doc = {"version": 1.3, "people": [{"hand_right_keypoints_2d": kp.reshape(-1).tolist()}]}
        (root / "rgb_2D_keypoints" / f"{rel}.json").parent.mkdir(parents=True, exist_ok=True)
        (root / "rgb_2D_keypoints" / f"{rel}.json").write_text(json.dumps(doc))
  return root


def _config(root, data_dir):
  c = ust.get_config("tiny")
  c.data.name, c.data.manual_dir, c.data.subset = "hanco", str(root), True
  c.data.data_dir, c.data.image_size, c.data.crop_size = str(data_dir), 224, 32
  return c


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = write_fixture(tmp_path_factory.mktemp("HanCo"))
  config = _config(root, tmp_path_factory.mktemp("tfds"))
  info = prepare.prepare(config)
  return config, info


def test_counts_splits_shapes_and_projections(built):
  config, info = built
  # Sequence 0: frames 0-3 give two clips of 2 (frame 5 has no successor); 1201 is test.
  assert info["splits"] == {"train": 2, "test": 1}
  b = prepare.dataset_builder(config)
  train = list(tfds.as_numpy(b.as_dataset(split="train")))
  test = list(tfds.as_numpy(b.as_dataset(split="test")))
  assert sorted(tuple(e["frame_ids"]) for e in train) == [(0, 1), (2, 3)]
  assert {int(e["sequence"]) for e in train} == {0} and int(test[0]["sequence"]) == 1201
  ex = train[0]
  assert ex["images"].shape == (16, 224, 224, 3) and ex["images"].dtype == np.uint8
  uv, _ = cameras.world_to_image(
    ex["K"], ex["T_cam_world"], np.broadcast_to(ex["xyz"][:, None], (2, 8, 21, 3))
  )
  np.testing.assert_allclose(uv, ex["uv"], atol=1e-3)
  # The OpenPose labels are read back (offset by one pixel in the fixture); a missing file is a
  # missed detection (confidence 0).
  frame1 = next(e for e in train if e["frame_ids"][0] == 0)
  np.testing.assert_allclose(frame1["uv_pl"][0], frame1["uv"][0] + 1.0, atol=1e-3)
  assert np.all(frame1["conf"][1, 3] == 0.0) and np.all(frame1["conf"][0] == np.float32(0.8))


def test_pipeline_uses_the_dataset_pseudo_labels(built):
  config, _ = built
  batch = next(pipeline.batches(config, "test", train=False, batch_size=2))
  assert batch["images"].shape == (2, 2, 2, 32, 32, 3)
  real = batch["mask"] > 0
  # uv_pl is the stored labels warped into the crop: one pixel of 224 scaled by the crop.
  d = np.linalg.norm(batch["uv_pl"][real] - batch["uv"][real], axis=-1)
  assert np.all(d < 0.5) and np.all(d > 0.0)


def _prepare_error(root, tmp_path):
  with pytest.raises(hanco.HancoError) as e:
    prepare.prepare(_config(root, tmp_path / "tfds"))
  return str(e.value)


def test_missing_file_is_named(tmp_path):
  root = write_fixture(tmp_path / "HanCo")
  (root / "calib" / "0000" / "00000002.json").unlink()
  assert "calib/0000/00000002.json" in _prepare_error(root, tmp_path)


def test_truncated_json_is_named(tmp_path):
  root = write_fixture(tmp_path / "HanCo")
  path = root / "xyz" / "1201" / "00000001.json"
  path.write_text(path.read_text()[:20])
  msg = _prepare_error(root, tmp_path)
  assert "malformed JSON" in msg and "xyz/1201/00000001.json" in msg


def test_corrupt_image_is_named(tmp_path):
  root = write_fixture(tmp_path / "HanCo")
  (root / "rgb" / "0000" / "cam5" / "00000003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  assert "corrupt image" in _prepare_error(root, tmp_path)


def test_official_count_is_enforced_unless_subset(tmp_path):
  root = write_fixture(tmp_path / "HanCo")
  with pytest.raises(hanco.HancoError, match="1518"):
    hanco.scan(root, subset=False)
  assert sorted(hanco.scan(root, subset=True)[0][0]) == FRAMES[0]


def test_clips_are_consecutive_windows():
  assert hanco.clips_of([0, 1, 2, 3, 5, 6, 8], 2) == [[0, 1], [2, 3], [5, 6]]
  assert hanco.clips_of([0, 2, 4], 1) == [[0], [2], [4]]


def test_tiny_ust_trains_a_step_on_hanco(built, tmp_path):
  from handflow import modes, sharding, train
  from handflow.eval import evaluators
  from handflow.methods import registry

  config, _ = built
  config = config.copy_and_resolve_references()
  config.num_steps, config.tensorboard, config.checkpoint.every = 2, False, 2
  # HanCo ships no validation split: training evaluates on a held-out clip of train.
  config.data.train_split, config.data.eval_split = "train[:50%]", "train[50%:]"
  config.eval_every = 2
  # The loop and its periodic evaluation on the held-out clip (the report after it is the
  # synthetic end-to-end tests' to check: here it would only add compiles).
  method = registry.make(config)
  mesh = sharding.make_mesh({"data": -1})
  stats_fn = evaluators.make_stats_fn(method, evaluators.from_config(config), mesh)
  val = modes.split_batches(config, "eval")
  seen = []

  def evaluate(params, extra):
    seen.append(evaluators.evaluate(stats_fn, params, extra, val(), mesh))
    return seen[-1]

  train.train_and_evaluate(config, tmp_path / "wd", method, modes.train_batches(config), evaluate)
  assert len(seen) == 1 and np.isfinite(seen[0]["hanco/MPJPE"])
  assert "hanco/MPVPE" not in seen[0]  # no ground-truth meshes without a MANO file
  rows = [json.loads(x) for x in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  losses = [r for r in rows if "loss" in r]
  assert [r["step"] for r in losses] == [1, 2] and np.isfinite(losses[-1]["loss"])
  assert jax.process_count() == 1


def test_mano_meshes_match_a_reference_forward_pass(tmp_path):
  """With a MANO file, `verts` are the fits' world meshes: manopth's convention (finger pose
  relative to hands_mean, translation added), checked against the loop-based NumPy MANO."""
  from handflow.hand.testing import random_mano_arrays
  from tests.hand.conftest import write_fake_mano_pickle
  from tests.hand.numpy_lbs import mano_forward

  arrays = random_mano_arrays()
  (tmp_path / "mano").mkdir()
  write_fake_mano_pickle(tmp_path / "mano" / "MANO_RIGHT.pkl", arrays)
  root = write_fixture(tmp_path / "HanCo")
  config = _config(root, tmp_path / "tfds")
  config.data.mano_dir = str(tmp_path / "mano")
  assert prepare.prepare(config)["splits"] == {"train": 2, "test": 1}
  train = list(tfds.as_numpy(prepare.dataset_builder(config).as_dataset(split="train")))
  ex = next(e for e in train if e["frame_ids"][0] == 2)  # frames 2 (no fit) and 3
  assert ex["verts"].shape == (2, 778, 3) and list(ex["has_verts"]) == [False, True]
  fit = json.loads((root / "shape" / "0000" / "00000003.json").read_text())
  pose = np.asarray(fit["poses"][0])
  pose[3:] += arrays["hands_mean"]
  want, _ = mano_forward(arrays, pose.reshape(16, 3), np.asarray(fit["shapes"][0]))
  want += np.asarray(fit["global_t"]).reshape(3)
  np.testing.assert_allclose(ex["verts"][1], want, atol=2e-5)
  assert np.all(ex["verts"][0] == 0.0)


def test_missing_mano_file_is_named(tmp_path):
  root = write_fixture(tmp_path / "HanCo")
  config = _config(root, tmp_path / "tfds")
  config.data.mano_dir = str(tmp_path / "nowhere")
  with pytest.raises(manual.ManualDataError, match="MANO_RIGHT.pkl"):
    prepare.prepare(config)
