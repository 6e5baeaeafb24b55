"""The pseudo-label command's dataset side (MediaPipe itself runs in its own environment)."""

import json

import numpy as np

from handflow.data import detect, manual, mediapipe_worker
from tests.data import test_freihand, test_hanco


def test_labels_go_where_the_builders_read_them(tmp_path):
  root = test_hanco.write_fixture(tmp_path / "HanCo")
  jobs = detect.images("hanco", root)
  # Every camera of every valid frame; training sequences from rgb/, test ones from rgb_merged/.
  assert len(jobs) == 8 * sum(len(f) for f in test_hanco.FRAMES.values())
  assert (
    root / "rgb/0000/cam0/00000000.jpg",
    root / "rgb_2D_keypoints/0000/cam0/00000000.json",
  ) in jobs
  assert (
    root / "rgb_merged/1201/cam7/00000001.jpg",
    root / "rgb_2D_keypoints/1201/cam7/00000001.json",
  ) in jobs
  root = test_freihand.write_fixture(tmp_path / "FreiHAND")
  jobs = detect.images("freihand", root)
  assert len(jobs) == 4 * test_freihand.N_TRAIN + test_freihand.N_EVAL
  assert all(o == manual.label_path(root, i.relative_to(root).as_posix()) for i, o in jobs)
  assert all(i.is_file() for i, _ in jobs)


def test_worker_output_reads_back_in_pixels(tmp_path):
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 1, (21, 2))
  doc = mediapipe_worker.openpose_doc(xy, 640, 480, 0.875)
  path = tmp_path / "a.json"
  path.write_text(json.dumps(doc))
  uv, conf = manual.openpose_labels(path, "test")
  np.testing.assert_allclose(uv, xy * [640, 480], atol=1e-3)
  np.testing.assert_allclose(conf, 0.875)
