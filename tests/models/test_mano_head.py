"""The shared MANO head: an untrained head is the flat mean hand; placement; the camera."""

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.geometry import alignment
from handflow.hand import conventions, rotations
from handflow.models import mano_head


def test_untrained_head_is_the_flat_mean_hand_and_camera_centred():
  head = mano_head.ManoHead(hidden=16, num_betas=5, global_orient=True, camera=True)
  x = jnp.ones((2, 3, 7))
  params = head.init(jax.random.key(0), x)
  assert set(params["params"]) == {"hidden", "out"}
  out = head.apply(params, x)
  assert out.rot6d_delta.shape == (2, 3, 16, 6) and out.betas.shape == (2, 3, 5)
  assert float(jnp.abs(out.rot6d_delta).max()) == 0.0 and out.camera.shape == (2, 3, 3)
  model = hand.load("open", "right")
  verts, kp, R = mano_head.articulate(model, out.rot6d_delta, out.betas)
  rest = hand.forward(model, jnp.zeros((45,)))
  np.testing.assert_allclose(verts[0, 0], rest.vertices, atol=1e-6)
  np.testing.assert_allclose(R, jnp.broadcast_to(jnp.eye(3), R.shape), atol=1e-6)
  want = conventions.keypoints(model, rest.vertices, rest.joints, "openpose")
  np.testing.assert_allclose(kp[1, 2], want, atol=1e-6)
  uv = mano_head.weak_perspective(kp - kp[..., :1, :], out.camera)
  np.testing.assert_allclose(uv[..., 0, :], 0.5, atol=1e-6)  # the wrist at the crop's centre


def test_fifteen_joint_residuals_keep_the_wrist_and_match_the_kernel():
  model = hand.load("open", "right")
  aa = jnp.asarray(np.random.default_rng(0).normal(scale=0.3, size=(15, 3)), jnp.float32)
  delta = rotations.axis_angle_to_rot6d(aa) - mano_head.IDENTITY_6D
  verts, _, R = mano_head.articulate(model, delta, jnp.zeros((5,)))
  ref = hand.forward(model, aa.reshape(45))
  np.testing.assert_allclose(verts, ref.vertices, atol=1e-5)
  np.testing.assert_allclose(R[0], jnp.eye(3), atol=1e-6)


def test_place_by_similarity_recovers_a_similarity():
  model = hand.load("open", "right")
  verts, kp, _ = mano_head.articulate(model, jnp.zeros((15, 6)), jnp.zeros((5,)))
  R = rotations.axis_angle_to_matrix(jnp.asarray([0.3, -1.0, 0.4]))
  target = alignment.apply_similarity(kp, jnp.asarray(1.3), R, jnp.asarray([0.1, 0.2, 0.5]))
  placed_kp, placed_v, s, R_fit = mano_head.place_by_similarity(kp, verts, target)
  np.testing.assert_allclose(placed_kp, target, atol=1e-5)
  np.testing.assert_allclose(s, 1.3, rtol=1e-5)
  np.testing.assert_allclose(R_fit, R, atol=1e-5)
  g = jax.grad(lambda t: mano_head.place_by_similarity(kp, verts, t)[0].sum())(target)
  assert float(jnp.abs(g).max()) == 0.0  # no gradient through the fit
