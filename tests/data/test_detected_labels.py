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
  side = 16  # renders 16 x 16: exported x2 with an 8-pixel (render) border
  uv = np.arange(42, dtype=np.float64).reshape(21, 2) / 4.0  # in the renders
  exported = uv * 2.0 + 16.0
  doc = lambda c: json.dumps(manual.openpose_doc(exported, np.full(21, c)))
  (labels / "000003_0_0.json").write_text(doc(0.9))
  (labels / "000003_0_1.json").write_text(json.dumps({"version": 1.3, "people": []}))  # a miss
  (labels / "000005_0_0.json").write_text(doc(0.5))
  # 000005_0_1.json is missing: an interrupted detector run.
  assert detected_labels.cached(builder, "test") is None
  out = detected_labels.consolidate(base, "test", clips, side)
  assert out == {"clips": 2, "detected": 0.5, "missing_files": 1}
  assert detected_labels.cached(builder, "test") == {"images": 4, "missing_files": 1}
  with np.load(base / "test.npz") as z:
    np.testing.assert_allclose(z["uv"][0, 0, 0], uv, atol=1e-3)  # pixels of the renders
    np.testing.assert_array_equal(z["uv"][0, 0, 1], 0.0)  # a miss has no position
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


def test_export_pads_and_consolidation_maps_back_to_render_pixels():
  render = np.zeros((16, 16, 3), np.uint8)
  render[5, 9] = 255  # row 5, column 9: centre (9.5, 5.5) with corners at integers
  out = detected_labels.export_image(render)
  b = detected_labels.pad_px(16)
  assert out.shape == (32 + 2 * b, 32 + 2 * b, 3) and b == 16
  rows, cols = np.nonzero(out[..., 0])
  centre_exported = np.array([cols.mean() + 0.5, rows.mean() + 0.5])  # as MediaPipe's x * w
  np.testing.assert_allclose((centre_exported - b) / detected_labels.UPSAMPLE, [9.5, 5.5])
