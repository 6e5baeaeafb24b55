"""The shipped open hand: structure, anatomy and mirroring."""

import numpy as np
import pytest

from handflow import hand
from handflow.hand import conventions, kernel, model


def _fist(curl=(1.2, 1.5, 1.0)):
  pose = np.zeros((15, 3), np.float32)
  for finger in range(4):  # MANO order: index, middle, pinky, ring; flexion is about -z.
    for k in range(3):
      pose[3 * finger + k] = [0.0, 0.0, -curl[k]]
  return pose.reshape(45)


def test_structure(open_model):
  m = open_model
  assert m.num_joints == 16 and m.parents == model.MANO_PARENTS
  assert 1500 <= m.num_vertices <= 2000 and m.num_betas >= 5
  assert not m.has_pose_blendshapes
  faces = np.asarray(m.faces)
  assert faces.shape[1] == 3 and len(np.unique(faces)) == m.num_vertices  # no stray vertex
  np.testing.assert_allclose(np.asarray(m.weights).sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(m.j_template)[0], 0.0, atol=1e-6)  # wrist at origin


def test_plausible_adult_proportions(open_model):
  out = kernel.forward(open_model, np.zeros(45, np.float32))
  kp = np.asarray(conventions.keypoints(open_model, out.vertices, out.joints))
  length = np.linalg.norm(kp[12] - kp[0])  # wrist -> middle fingertip
  assert 0.16 < length < 0.21
  width = np.linalg.norm(kp[5] - kp[17])  # index MCP -> pinky MCP
  assert 0.05 < width < 0.1
  # Finger lengths: middle > index, ring > pinky (adult anatomy).
  seg = lambda a, b: sum(np.linalg.norm(kp[i + 1] - kp[i]) for i in range(a, b))
  assert seg(9, 12) > seg(5, 8) and seg(13, 16) > seg(17, 20)


def test_tips_at_finger_ends(open_model):
  out = kernel.forward(open_model, np.zeros(45, np.float32))
  kp = np.asarray(conventions.keypoints(open_model, out.vertices, out.joints))
  verts, weights = np.asarray(out.vertices), np.asarray(open_model.weights)
  # OpenPose tip and DIP ids, and the MANO joint of each distal phalanx.
  for tip, dip, joint in zip(
    (4, 8, 12, 16, 20), (3, 7, 11, 15, 19), (15, 3, 6, 12, 9), strict=True
  ):
    direction = (kp[tip] - kp[dip]) / np.linalg.norm(kp[tip] - kp[dip])
    phalanx = verts[weights[:, joint] > 0.5]
    # The tip is the furthest point of its distal phalanx along it.
    assert np.all((phalanx - kp[dip]) @ direction <= (kp[tip] - kp[dip]) @ direction + 1e-6)
    assert 0.012 < np.linalg.norm(kp[tip] - kp[dip]) < 0.035


def test_fist_brings_fingertips_to_the_palm(open_model):
  flat = kernel.forward(open_model, np.zeros(45, np.float32))
  fist = kernel.forward(open_model, _fist())
  for out, lo, hi in ((flat, 0.07, 0.13), (fist, 0.0, 0.06)):
    kp = np.asarray(conventions.keypoints(open_model, out.vertices, out.joints))
    palm = np.asarray(out.joints)[[0, 1, 4, 7, 10]].mean(0)
    d = np.linalg.norm(kp[[8, 12, 16, 20]] - palm, axis=1)
    assert np.all((lo < d) & (d < hi)), d
  # Fingers curl towards the palm side (-y), not the back of the hand.
  kp = np.asarray(conventions.keypoints(open_model, fist.vertices, fist.joints))
  assert np.all(kp[[8, 12, 16, 20], 1] < 0)


def test_left_is_the_mirror_of_right():
  right, left = hand.load("open", "right"), hand.load("open", "left")
  pose = np.random.default_rng(0).normal(0, 0.3, 45).astype(np.float32)
  betas = np.random.default_rng(1).normal(size=5).astype(np.float32)
  mirror_aa = lambda aa: (aa.reshape(-1, 3) * [-1, -1, 1]).reshape(aa.shape)
  r = kernel.forward(right, pose, betas, global_orient=np.array([0.1, 0.2, 0.3], np.float32))
  l = kernel.forward(  # noqa: E741
    left, mirror_aa(pose), betas, global_orient=mirror_aa(np.array([0.1, 0.2, 0.3], np.float32))
  )
  np.testing.assert_allclose(l.vertices, np.asarray(r.vertices) * [1, 1, -1], atol=2e-6)
  # Mirroring flips the winding so that normals still point outwards.
  fr, fl = np.asarray(right.faces), np.asarray(left.faces)
  np.testing.assert_array_equal(fl, fr[:, ::-1])


def test_outward_normals(open_model):
  v = np.asarray(open_model.v_template).T
  f = np.asarray(open_model.faces)
  # Signed volume (divergence theorem) about the wrist, where the mesh is open: positive for
  # outward (counter-clockwise) triangles, and the volume of an adult hand (~350-450 ml).
  p = v[f] - np.asarray(open_model.j_template)[0]
  volume = np.sum(np.einsum("fi,fi->f", p[:, 0], np.cross(p[:, 1], p[:, 2]))) / 6.0
  assert 2.5e-4 < volume < 6e-4, volume


def test_shape_directions_change_the_hand(open_model):
  base = kernel.template(open_model)
  lengths = []
  for k in range(open_model.num_betas):
    betas = np.zeros(open_model.num_betas, np.float32)
    betas[k] = 2.0
    out = kernel.template(open_model, betas)
    assert np.abs(np.asarray(out.vertices) - np.asarray(base.vertices)).max() > 1e-3
    lengths.append(np.linalg.norm(out.joints[6] - out.joints[0]))
  assert lengths[0] > np.linalg.norm(base.joints[6] - base.joints[0])  # beta 0 = hand scale


def test_load_errors(tmp_path):
  with pytest.raises(ValueError, match="side must be one of"):
    hand.load("open", "middle")
  with pytest.raises(FileNotFoundError, match="hand model file not found"):
    hand.load(str(tmp_path / "x.npz"))
  with pytest.raises(ValueError, match="expected 'open', a MANO .pkl path"):
    hand.load(str(tmp_path / "x.obj"))
  with pytest.raises(ValueError, match="is a right hand but side='left'"):
    hand.load(str(model.ASSETS / "open_hand_right.npz"), "left")
