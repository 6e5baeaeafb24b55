"""The pseudo-label command's dataset side (MediaPipe itself runs in its own environment)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

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


_FAKE_WORKER = """
import json, sys
jobs = [json.loads(line) for line in open(sys.argv[1])]
for job in jobs:
  if "bad" in job["image"]:
    print("cannot read image " + job["image"], file=sys.stderr)
    sys.exit(2)
  open(job["labels"], "w").write("{}")
print(json.dumps({"images": len(jobs), "missed": 1}))
"""


def test_run_jobs_shards_over_workers_sums_them_and_names_a_failure(tmp_path, monkeypatch):
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").symlink_to(sys.executable)
  worker = tmp_path / "worker.py"
  worker.write_text(_FAKE_WORKER)
  monkeypatch.setattr(detect, "WORKER", worker)
  jobs = [(tmp_path / f"{i}.png", tmp_path / f"{i}.json") for i in range(5)]
  # 3 workers over 5 images: each reports one miss.
  assert detect.run_jobs(jobs, venv=venv, create=False, workers=3) == {"images": 5, "missed": 3}
  assert all(out.is_file() for _, out in jobs)
  bad = [(tmp_path / "bad.png", tmp_path / "bad.json")]
  with pytest.raises(RuntimeError, match=r"worker failed \(2\): cannot read image .*bad.png"):
    detect.run_jobs(jobs + bad, venv=venv, create=False, workers=2)
  with pytest.raises(FileNotFoundError, match="no MediaPipe environment"):
    detect.run_jobs(jobs, venv=tmp_path / "none", create=False)


def test_a_failed_install_leaves_no_environment_that_looks_ready(tmp_path, monkeypatch):
  venv = tmp_path / "mediapipe"

  def fake_run(cmd, check, pip_ok):
    if "venv" in cmd:  # python -m venv DIR
      (pathlib.Path(cmd[-1]) / "bin").mkdir(parents=True)
      (pathlib.Path(cmd[-1]) / "bin" / "python").write_text("")
    elif not pip_ok:
      raise subprocess.CalledProcessError(1, cmd)

  monkeypatch.setattr(detect.subprocess, "run", lambda cmd, check: fake_run(cmd, check, False))
  with pytest.raises(subprocess.CalledProcessError):
    detect.ensure_venv(venv)
  assert not venv.exists()
  monkeypatch.setattr(detect.subprocess, "run", lambda cmd, check: fake_run(cmd, check, True))
  assert detect.ensure_venv(venv) == venv / "bin" / "python" and venv.is_dir()
  assert not (tmp_path / "mediapipe.partial").exists()
