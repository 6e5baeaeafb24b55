"""The FreiHAND v2 builder on a fixture written here in the official layout (no real data)."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import ust
from handflow.data import freihand, manual, prepare

N_TRAIN, N_EVAL = 3, 2


def write_fixture(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  for prefix, n, versions in (("training", N_TRAIN, 4), ("evaluation", N_EVAL, 1)):
    K = np.broadcast_to([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]], (n, 3, 3))
    xyz = rng.normal(0, 0.03, (n, 21, 3)) + [0, 0, 0.6]
    verts = rng.normal(0, 0.03, (n, 778, 3)) + [0, 0, 0.6]
    docs = {
      "K": K.tolist(),
      "xyz": xyz.tolist(),
      "verts": verts.tolist(),
      "scale": rng.uniform(0.02, 0.04, n).tolist(),
      "mano": rng.normal(size=(n, 1, 61)).tolist(),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, doc in docs.items():
      (root / f"{prefix}_{key}.json").write_text(json.dumps(doc))
    (root / prefix / "rgb").mkdir(parents=True)
    for i in range(n * versions):
      img = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
      (root / prefix / "rgb" / f"{i:08d}.jpg").write_bytes(tf.io.encode_jpeg(img).numpy())
  # Pseudo-labels for the first training image only (the others are missed detections).
  path = manual.label_path(root, "training/rgb/00000000.jpg")
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(manual.openpose_doc(np.zeros((21, 2)) + 5.0, np.full(21, 0.7))))
  return root


def _config(root, data_dir):
  c = ust.get_config("tiny")
  c.data.name, c.data.manual_dir, c.data.subset = "freihand", str(root), True
  c.data.data_dir, c.data.frames, c.data.views = str(data_dir), 1, 1
  return c


def test_counts_versions_projections_and_meshes(tmp_path):
  root = write_fixture(tmp_path / "FreiHAND")
  config = _config(root, tmp_path / "tfds")
  assert prepare.prepare(config)["splits"] == {"train": 4 * N_TRAIN, "test": N_EVAL}
  b = prepare.dataset_builder(config)
  train = {int(e["clip_id"]): e for e in tfds.as_numpy(b.as_dataset(split="train"))}
  assert sorted(train) == list(range(4 * N_TRAIN))
  xyz = np.asarray(json.loads((root / "training_xyz.json").read_text()))
  verts = np.asarray(json.loads((root / "training_verts.json").read_text()))
  for image_id, ex in train.items():
    # Image i shows annotation i mod 32,560 (here: mod N_TRAIN), version i // N_TRAIN.
    assert ex["annotation"] == image_id % N_TRAIN and ex["version"] == image_id // N_TRAIN
    np.testing.assert_allclose(ex["xyz"][0], xyz[image_id % N_TRAIN], atol=1e-6)
    np.testing.assert_allclose(ex["verts"][0], verts[image_id % N_TRAIN], atol=1e-6)
    assert ex["images"].shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(ex["T_cam_world"][0, 0], np.eye(4))
    uv = xyz[image_id % N_TRAIN] @ np.asarray(ex["K"][0, 0]).T
    np.testing.assert_allclose(ex["uv"][0, 0], uv[:, :2] / uv[:, 2:], atol=1e-3)
  np.testing.assert_allclose(train[0]["uv_pl"][0, 0], 5.0)
  assert np.all(train[0]["conf"] == np.float32(0.7)) and np.all(train[1]["conf"] == 0)


def _prepare_error(root, tmp_path):
  with pytest.raises(freihand.FreihandError) as e:
    prepare.prepare(_config(root, tmp_path / "tfds"))
  return str(e.value)


def test_truncated_mesh_file_is_named(tmp_path):
  root = write_fixture(tmp_path / "FreiHAND")
  path = root / "training_verts.json"
  path.write_text(path.read_text()[: len(path.read_text()) // 2])
  msg = _prepare_error(root, tmp_path)
  assert "malformed JSON" in msg and "training_verts.json" in msg and "element 1" in msg


def test_missing_image_and_file_are_named(tmp_path):
  root = write_fixture(tmp_path / "FreiHAND")
  (root / "training" / "rgb" / "00000007.jpg").unlink()
  assert "training/rgb/00000007.jpg" in _prepare_error(root, tmp_path)
  (root / "evaluation_K.json").unlink()
  assert "missing file" in _prepare_error(root, tmp_path)


def test_official_count_is_enforced_unless_subset(tmp_path):
  root = write_fixture(tmp_path / "FreiHAND")
  with pytest.raises(freihand.FreihandError, match="32560"):
    freihand.read_annotations(root, "training", subset=False)
  assert len(freihand.read_annotations(root, "training", subset=True)["K"]) == N_TRAIN


def test_streamed_json_matches_json_load(tmp_path):
  data = np.random.default_rng(0).normal(size=(20, 5, 3)).round(4).tolist()
  path = tmp_path / "a.json"
  path.write_text(json.dumps(data, indent=1))
  assert list(manual.iter_json_array(path, "X", chunk=17)) == data
  path.write_text(" [ ] ")
  assert list(manual.iter_json_array(path, "X", chunk=2)) == []
