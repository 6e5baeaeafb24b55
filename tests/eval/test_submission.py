import json
import os
import subprocess
import sys

import numpy as np
import pytest

from handflow.eval import protocols, submission
from handflow.geometry import cameras
from tests.eval.test_protocols import _data


def test_freihand_round_trip_and_size_check(tmp_path):
  pred_j, _, pred_v, _ = _data(n=4)
  with pytest.raises(ValueError, match="3,960 samples, got 4"):
    submission.write_freihand(tmp_path / "pred.json", pred_j, pred_v)
  assert not list(tmp_path.iterdir())  # nothing half-written
  submission.write_freihand(tmp_path / "pred.json", pred_j, pred_v, allow_subset=True)
  j, v = submission.read_json_pair(tmp_path / "pred.json")
  np.testing.assert_allclose(j, pred_j, atol=1e-6)
  np.testing.assert_allclose(v, pred_v, atol=1e-6)
  with pytest.raises(ValueError, match="MANO's \\[samples, 778, 3\\]"):
    submission.write_freihand(tmp_path / "p2.json", pred_j, pred_v[:, :700], allow_subset=True)


def test_ho3d_refuses_the_opencv_frame(tmp_path):
  pred_j, _, pred_v, _ = _data(n=3)
  with pytest.raises(ValueError, match="OpenCV camera frame"):
    submission.write_ho3d(tmp_path / "pred.json", pred_j, pred_v, allow_subset=True)
  gl_j = np.asarray(cameras.opencv_to_opengl(pred_j))
  gl_v = np.asarray(cameras.opencv_to_opengl(pred_v))
  submission.write_ho3d(tmp_path / "pred.json", gl_j, gl_v, version=3, allow_subset=True)
  j, _ = submission.read_json_pair(tmp_path / "pred.json")
  np.testing.assert_allclose(j, gl_j, atol=1e-6)


def test_dexycb_text_round_trip_in_millimetres(tmp_path):
  pred_j, _, _, _ = _data(n=3)
  submission.write_dexycb(tmp_path / "res.txt", pred_j, indices=[7, 8, 9])
  first = (tmp_path / "res.txt").read_text().splitlines()[0].split(",")
  assert first[0] == "7" and len(first) == 64
  assert float(first[3]) == pytest.approx(pred_j[0, 0, 2] * 1000, abs=1e-3)  # mm
  idx, j = submission.read_dexycb(tmp_path / "res.txt")
  np.testing.assert_array_equal(idx, [7, 8, 9])
  np.testing.assert_allclose(j, pred_j, atol=1e-6)


def test_readers_name_bad_files(tmp_path):
  bad = tmp_path / "trunc.json"
  bad.write_text("[[[0.1, 0.2")
  with pytest.raises(ValueError, match="trunc.json: not valid JSON"):
    submission.read_json_pair(bad)
  with pytest.raises(FileNotFoundError, match="evaluation_xyz.json"):
    submission.read_freihand_gt(tmp_path)
  txt = tmp_path / "r.txt"
  txt.write_text("1,2,3\n")
  with pytest.raises(ValueError, match=r"r.txt:1: expected index \+ 63 values, got 3"):
    submission.read_dexycb(txt)


def test_cli_scores_a_freihand_layout(tmp_path):
  pred_j, gt_j, pred_v, gt_v = _data(n=6)
  (tmp_path / "evaluation_xyz.json").write_text(json.dumps(gt_j.tolist()))
  (tmp_path / "evaluation_verts.json").write_text(json.dumps(gt_v.tolist()))
  submission.write_freihand(tmp_path / "pred.json", pred_j, pred_v, allow_subset=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "handflow.eval",
      "--protocol=freihand",
      f"--pred={tmp_path / 'pred.json'}",
      f"--gt={tmp_path}",
    ],
    capture_output=True,
    text=True,
    env=env,
  )
  assert r.returncode == 0, r.stderr
  assert "PA-MPJPE" in r.stdout and "mm" in r.stdout
  scores = json.loads((tmp_path / "pred.scores.json").read_text())
  want = protocols.evaluate("freihand", pred_j, gt_j, pred_v, gt_v)
  assert scores["results"]["PA-MPVPE"] == pytest.approx(want["PA-MPVPE"], rel=1e-5)
  mm = tmp_path / "mm.json"
  mm.write_text(json.dumps([(pred_j * 1000).tolist(), (pred_v * 1000).tolist()]))
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "handflow.eval",
      "--protocol=freihand",
      f"--pred={mm}",
      f"--gt={tmp_path}",
    ],
    capture_output=True,
    text=True,
    env=env,
  )
  assert r.returncode == 2 and "look like millimetres" in r.stderr


def test_cli_checks_out_before_scoring(tmp_path, capsys):
  """An unwritable --out fails in one line before any scoring, and writes nothing."""
  from handflow.eval import __main__ as cli

  pred_j, gt_j, _, _ = _data(n=3)
  (tmp_path / "gt.json").write_text(json.dumps([gt_j.tolist(), []]))
  (tmp_path / "pred.json").write_text(json.dumps([pred_j.tolist(), []]))
  (tmp_path / "afile").write_text("")
  args = ["--protocol=rootrel", f"--pred={tmp_path / 'pred.json'}", f"--gt={tmp_path / 'gt.json'}"]
  assert cli.main([*args, f"--out={tmp_path / 'afile' / 's.json'}"]) == 2
  err = capsys.readouterr()
  assert "afile is not a directory" in err.err and "MPJPE" not in err.out
  assert cli.main([*args, f"--out={tmp_path / 's.json'}"]) == 0
  assert json.loads((tmp_path / "s.json").read_text())["samples"] == 3
