"""MediaPipe labels of the embedded renders: consolidation, missing files, no environment."""

import json
import types

import numpy as np

from handflow import report
from handflow.data import detected_labels, manual, pipeline, prepare
from tests.data.test_synthetic_hands import tiny  # noqa: F401 - the shared tiny dataset


def test_consolidate_reads_labels_and_counts_missing_files_as_misses(tmp_path):
  clips = [(3, 1, 2), (5, 1, 2)]  # (clip_id, frames, views)
  builder = types.SimpleNamespace(data_dir=tmp_path)
  base = detected_labels.root(builder)
  labels = base / "labels" / "test"
  labels.mkdir(parents=True)
  uv = np.arange(42, dtype=np.float64).reshape(21, 2) * 2.0  # in the x2 renders
  (labels / "000003_0_0.json").write_text(json.dumps(manual.openpose_doc(uv, np.full(21, 0.9))))
  (labels / "000003_0_1.json").write_text(json.dumps({"version": 1.3, "people": []}))  # a miss
  (labels / "000005_0_0.json").write_text(json.dumps(manual.openpose_doc(uv, np.full(21, 0.5))))
  # 000005_0_1.json is missing: an interrupted detector run.
  assert detected_labels.cached(builder, "test") is None
  out = detected_labels.consolidate(base, "test", clips)
  assert out == {"clips": 2, "detected": 0.5, "missing_files": 1}
  assert detected_labels.cached(builder, "test") == {"images": 4, "missing_files": 1}
  with np.load(base / "test.npz") as z:
    np.testing.assert_allclose(z["uv"][0, 0, 0], uv / 2, atol=1e-3)  # pixels of the renders
    np.testing.assert_allclose(z["conf"][:, 0, :, 0], [[0.9, 0.0], [0.5, 0.0]])
    assert int(z["missing_files"]) == 1 and list(z["clip_id"]) == [3, 5]
  assert not list(base.glob("*.tmp"))  # nothing half-written


def test_without_mediapipe_the_pipeline_says_so_and_simulates(tiny, tmp_path, capsys, monkeypatch):  # noqa: F811
  config = tiny[0].copy_and_resolve_references()
  config.data.pseudo_labels.source = "mediapipe"
  monkeypatch.setattr(detected_labels.detect, "DEFAULT_VENV", tmp_path / "none")
  builder = prepare.dataset_builder(config)
  assert detected_labels.load(builder, "test") is None
  assert not (detected_labels.root(builder) / "test.npz").exists()
  assert report._labels_name(config).endswith("(no MediaPipe environment)")
  monkeypatch.setattr(pipeline, "_SAID", set())
  batch = next(pipeline.batches(config, "test", train=False))
  assert "no MediaPipe environment" in capsys.readouterr().out
  assert batch["conf"].max() > 0
