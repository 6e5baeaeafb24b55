import jax.numpy as jnp
import numpy as np
import pytest

from handflow.hand import conventions, kernel

DOCUMENTED_TIPS = {  # REFERENCE §1 (thumb, index, middle, ring, pinky)
  "freihand": (744, 320, 443, 555, 672),
  "ho3d": (744, 333, 444, 555, 672),
  "smplx": (744, 320, 443, 554, 671),
  "hamer": (744, 320, 443, 554, 671),
  "manopth": (745, 317, 444, 556, 673),
  "dexycb": (745, 317, 444, 556, 673),
}
OPENPOSE_TIPS = (4, 8, 12, 16, 20)


@pytest.fixture(scope="module")
def posed(mano_model):
  pose = np.random.default_rng(0).normal(0, 0.3, 45).astype(np.float32)
  return kernel.forward(mano_model, pose, global_orient=np.array([0.2, 0.1, -0.3], np.float32))


@pytest.mark.parametrize("name", sorted(DOCUMENTED_TIPS))
def test_presets_pick_documented_vertices(mano_model, posed, name):
  kp = np.asarray(conventions.keypoints(mano_model, posed.vertices, posed.joints, name))
  c = conventions.get(name)
  tips = kp[list(OPENPOSE_TIPS)] if c.order == "openpose" else kp[16:21]
  np.testing.assert_allclose(tips, np.asarray(posed.vertices)[list(DOCUMENTED_TIPS[name])])


def test_freihand_base_joints_regress_the_posed_mesh(mano_model, posed):
  kp = conventions.keypoints(mano_model, posed.vertices, posed.joints, "freihand")
  regressed = np.asarray(mano_model.j_regressor) @ np.asarray(posed.vertices)
  mano21 = np.concatenate([regressed, np.zeros((5, 3))])
  base = [i for i in range(21) if i not in OPENPOSE_TIPS]
  np.testing.assert_allclose(
    np.asarray(kp)[base],
    mano21[list(np.asarray(conventions.OPENPOSE_FROM_MANO21)[base])],
    atol=1e-6,
  )
  # ... which differs from the kinematic joints once the pose blend shapes act.
  kin = conventions.keypoints(mano_model, posed.vertices, posed.joints, "smplx")
  assert np.abs(np.asarray(kp)[base] - np.asarray(kin)[base]).max() > 1e-4


def test_openpose_order_names_and_kinematic_joints(open_model):
  out = kernel.forward(open_model, np.zeros(45, np.float32))
  kp = np.asarray(conventions.keypoints(open_model, out.vertices, out.joints))
  j = np.asarray(out.joints)
  # OpenPose: wrist, thumb MCP.., index MCP..; MANO: wrist, index1.., thumb at 13..15.
  assert conventions.OPENPOSE_NAMES[5] == "index_mcp"
  np.testing.assert_allclose(kp[0], j[0])
  np.testing.assert_allclose(kp[1:4], j[13:16])
  np.testing.assert_allclose(kp[5:8], j[1:4])
  np.testing.assert_allclose(kp[13:16], j[10:13])  # ring
  np.testing.assert_allclose(kp[17:20], j[7:10])  # pinky


def test_ho3d_order_is_consistent_with_reference_table(mano_model, posed):
  op = conventions.keypoints(mano_model, posed.vertices, posed.joints, "ho3d")
  ho3d_tips = conventions.Convention("x", "openpose", DOCUMENTED_TIPS["ho3d"], "kinematic")
  op_order = conventions.keypoints(mano_model, posed.vertices, posed.joints, ho3d_tips)
  np.testing.assert_allclose(conventions.reorder(op_order, "openpose", "ho3d"), op)
  np.testing.assert_allclose(conventions.reorder(op, "ho3d", "openpose"), op_order)


def test_mano_ids_on_open_hand_refused(open_model):
  out = kernel.forward(open_model, jnp.zeros(45))
  with pytest.raises(ValueError, match="names MANO vertex ids"):
    conventions.keypoints(open_model, out.vertices, out.joints, "freihand")
  with pytest.raises(ValueError, match="unknown keypoint convention 'nope'"):
    conventions.get("nope")
