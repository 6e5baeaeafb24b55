"""predict's files for people and benchmarks: OBJ meshes, the FreiHAND submission."""

import ml_collections
import numpy as np
import pytest

from handflow import exports
from handflow.eval import submission


def test_obj_round_trips_vertices_and_one_based_faces(tmp_path):
  verts = np.array([[0.0, 0.0, 0.5], [0.01, 0.0, 0.5], [0.0, 0.012345678, 0.5]])
  faces = np.array([[0, 1, 2]])
  arrays = {"vertices": verts[None, None], "clip_id": np.array([3])}
  assert exports.write_meshes(tmp_path, arrays, faces, -1, "test") == 1
  text = (tmp_path / "clip00003_frame0.obj").read_text().splitlines()
  assert text[0].startswith("# test prediction clip00003_frame0")
  assert [ln for ln in text if ln.startswith("f ")] == ["f 1 2 3"]
  got = np.array([[float(x) for x in ln.split()[1:]] for ln in text if ln.startswith("v ")])
  np.testing.assert_allclose(got, verts, atol=5e-7)


def test_mesh_limit_and_names_of_single_images(tmp_path):
  arrays = {"vertices": np.zeros((5, 1, 3, 3)), "image_id": np.arange(10, 15)}
  assert exports.write_meshes(tmp_path, arrays, np.array([[0, 1, 2]]), 2, "t") == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["image000010.obj", "image000011.obj"]


def _freihand(n_verts):
  config = ml_collections.ConfigDict({"data": {"name": "freihand"}})
  rng = np.random.default_rng(0)
  ids = np.array([2, 0, 1])
  arrays = {
    "image_id": ids,
    "clip_id": ids,
    "joints_cam": rng.normal(0, 0.03, (3, 1, 21, 3)) + [0, 0, 0.6],
    "vertices_cam": rng.normal(0, 0.03, (3, 1, n_verts, 3)) + [0, 0, 0.6],
  }
  return config, arrays


def test_freihand_submission_in_evaluation_order(tmp_path):
  config, arrays = _freihand(778)
  line = exports.write_submission(config, arrays, tmp_path)
  assert "wrote the FreiHAND submission" in line and "a subset: 3 of 3,960" in line
  joints, verts = submission.read_json_pair(tmp_path / "freihand_pred.json")
  order = np.argsort(arrays["image_id"])  # row k of the file is evaluation image k
  np.testing.assert_allclose(joints, arrays["joints_cam"][order, 0], atol=1e-6)
  assert verts.shape == (3, 778, 3)


@pytest.mark.parametrize("name, match", [("freihand", "MANO's [samples, 778, 3]"),
                                         ("dexycb", "set config.data.manual_dir")])  # fmt: skip
def test_no_submission_says_why(tmp_path, name, match):
  config, arrays = _freihand(1669)  # the open hand: not MANO's topology
  config.data.name = name
  line = exports.write_submission(config, arrays, tmp_path)
  assert line.startswith(f"no {name} submission file") and match in line
  assert not list(tmp_path.iterdir())


def test_a_method_without_3d_joints_gets_a_line_not_a_crash(tmp_path):
  config = ml_collections.ConfigDict({"data": {"name": "ho3d", "manual_dir": str(tmp_path)}})
  arrays = {"clip_id": np.array([0]), "uv": np.zeros((1, 1, 1, 21, 2))}  # keypoints2d's output
  with pytest.raises(ValueError, match="predicts no 3D joints"):
    exports.camera_frame(arrays, {0: {"T_cam_world": np.eye(4)[None, None]}})
  assert exports.write_submission(config, {"image_id": np.array([0])}, tmp_path).startswith(
    "no ho3d submission file"
  )
