import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handflow.hand import kernel, rotations
from tests.hand.numpy_lbs import mano_forward


def _pose(seed, batch=(), scale=0.4):
  return np.random.default_rng(seed).normal(0, scale, batch + (45,)).astype(np.float32)


def test_zero_pose_reproduces_template(open_model, mano_model):
  for m in (open_model, mano_model):
    out = kernel.forward(m, jnp.zeros(45))
    np.testing.assert_allclose(out.vertices, np.asarray(m.v_template).T, atol=1e-6)
    np.testing.assert_allclose(out.joints, m.j_regressor @ np.asarray(m.v_template).T, atol=1e-6)


def test_matches_numpy_reference_on_fabricated_mano(mano_arrays, mano_model):
  rng = np.random.default_rng(0)
  for _ in range(3):
    full = rng.normal(0, 0.5, (16, 3))
    betas = rng.normal(0, 1.0, 10)
    want_v, want_j = mano_forward(mano_arrays, full, betas)
    out = kernel.forward(
      mano_model, full[1:].reshape(45), betas, global_orient=full[0], flat_hand_mean=True
    )
    np.testing.assert_allclose(out.vertices, want_v, atol=2e-5)
    np.testing.assert_allclose(out.joints, want_j, atol=2e-5)


def test_flat_hand_mean_and_pca(mano_arrays, mano_model):
  coeffs = np.random.default_rng(1).normal(0, 1.0, (2, 12)).astype(np.float32)
  full45 = coeffs @ mano_arrays["hands_components"][:12]
  pca = kernel.forward(mano_model, coeffs, pca=True, flat_hand_mean=False)
  direct = kernel.forward(mano_model, full45 + mano_arrays["hands_mean"], flat_hand_mean=True)
  np.testing.assert_allclose(pca.vertices, direct.vertices, atol=2e-5)
  with pytest.raises(ValueError, match="PCA hand_pose has 46"):
    kernel.forward(mano_model, np.zeros(46), pca=True)


def test_global_rotation_rotates_outputs_about_the_wrist(open_model):
  pose = _pose(2)
  betas = np.random.default_rng(3).normal(size=5).astype(np.float32)
  base = kernel.forward(open_model, pose, betas)
  aa = np.array([0.3, -1.1, 0.7], np.float32)
  rot = Rotation.from_rotvec(aa).as_matrix()
  turned = kernel.forward(open_model, pose, betas, global_orient=aa)
  wrist = np.asarray(base.joints[0])
  np.testing.assert_allclose(turned.vertices, (base.vertices - wrist) @ rot.T + wrist, atol=2e-6)
  np.testing.assert_allclose(turned.joints, (base.joints - wrist) @ rot.T + wrist, atol=2e-6)


def test_translation_is_added(open_model):
  pose, t = _pose(4), np.array([0.1, -0.2, 0.5], np.float32)
  a = kernel.forward(open_model, pose)
  b = kernel.forward(open_model, pose, transl=t)
  np.testing.assert_allclose(b.vertices, a.vertices + t, atol=1e-6)


class BatchingTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_batch_vmap_jit_agree(self):
    from handflow import hand

    m = hand.load("open")
    poses = _pose(5, (2, 3))
    betas = np.random.default_rng(6).normal(size=(2, 3, 5)).astype(np.float32)
    orient = np.random.default_rng(7).normal(size=(2, 3, 3)).astype(np.float32)
    fwd = self.variant(lambda p, b, o: kernel.forward(m, p, b, o))
    batched = fwd(poses, betas, orient)
    assert batched.vertices.shape == (2, 3, m.num_vertices, 3)
    vmapped = jax.vmap(jax.vmap(fwd))(poses, betas, orient)
    np.testing.assert_allclose(batched.vertices, vmapped.vertices, atol=1e-6)
    single = fwd(poses[1, 2], betas[1, 2], orient[1, 2])
    np.testing.assert_allclose(batched.vertices[1, 2], single.vertices, atol=1e-6)
    np.testing.assert_allclose(batched.joints[1, 2], single.joints, atol=1e-6)


def test_broadcasting_betas_against_pose_batch(open_model):
  poses = _pose(8, (4,))
  betas = np.ones(5, np.float32) * 0.5
  out = kernel.forward(open_model, poses, betas)
  np.testing.assert_allclose(
    out.vertices[3], kernel.forward(open_model, poses[3], betas).vertices, atol=1e-6
  )


def test_gradients_finite_and_correct(mano_model):
  pose = jnp.asarray(_pose(9))
  betas = jnp.zeros(10)

  def loss(p, b):
    out = kernel.forward(mano_model, p, b, global_orient=jnp.zeros(3))
    return jnp.sum(out.vertices**2) + jnp.sum(out.joints**2)

  gp, gb = jax.grad(loss, argnums=(0, 1))(pose, betas)
  assert np.isfinite(gp).all() and np.isfinite(gb).all()
  eps = 1e-2
  e = jnp.zeros(45).at[7].set(eps)
  fd = (loss(pose + e, betas) - loss(pose - e, betas)) / (2 * eps)
  np.testing.assert_allclose(gp[7], fd, rtol=5e-2, atol=1e-4)
  # And at the zero pose (axis-angle at angle 0).
  g0 = jax.grad(loss)(jnp.zeros(45), betas)
  assert np.isfinite(g0).all()


def test_lbs_takes_rotmats_from_6d(open_model):
  pose = _pose(10)
  rotmats = kernel.pose_to_rotmats(open_model, pose)
  via6d = rotations.rot6d_to_matrix(rotations.matrix_to_rot6d(rotmats))
  np.testing.assert_allclose(
    kernel.lbs(open_model, via6d).vertices, kernel.forward(open_model, pose).vertices, atol=2e-6
  )


def test_template_with_betas_equals_zero_pose(open_model):
  betas = np.random.default_rng(11).normal(size=(3, 5)).astype(np.float32)
  t = kernel.template(open_model, betas)
  f = kernel.forward(open_model, np.zeros((3, 45), np.float32), betas)
  np.testing.assert_allclose(t.vertices, f.vertices, atol=1e-6)
  np.testing.assert_allclose(t.joints, f.joints, atol=1e-6)


def test_bad_shapes_are_named(open_model):
  with pytest.raises(ValueError, match=r"betas must be \[\.\.\., 5\]"):
    kernel.forward(open_model, np.zeros(45), np.zeros(10))
  with pytest.raises(ValueError, match=r"hand_pose must be \[\.\.\., 45\]"):
    kernel.forward(open_model, np.zeros(48))
  with pytest.raises(ValueError, match="rotmats must be"):
    kernel.lbs(open_model, np.zeros((15, 3, 3)))


def test_apply_custom_vjp_matches_autodiff():
  rng = np.random.default_rng(12)
  m = jnp.asarray(rng.normal(size=(2, 4, 3, 7)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
  jax.test_util.check_grads(kernel._apply, (m, v), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
  plain = lambda m, v: jnp.einsum("bcin,bcn->bin", m[:, :3], v) + m[:, 3]
  g = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
  want = jax.vjp(plain, m, v)[1](g)
  got = jax.vjp(kernel._apply, m, v)[1](g)
  for w, o in zip(want, got, strict=True):
    np.testing.assert_allclose(o, w, atol=1e-5)


def test_blocked_path_equals_unblocked(mano_model):
  poses = _pose(13, (300,))  # not a multiple of the block: exercises the padding
  betas = np.random.default_rng(14).normal(size=(300, 10)).astype(np.float32)
  rot = kernel.pose_to_rotmats(mano_model, poses)
  a = kernel.lbs(mano_model, rot, betas, chunk_size=128)
  b = kernel.lbs(mano_model, rot, betas, chunk_size=None)
  np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
  np.testing.assert_allclose(a.joints, b.joints, atol=1e-6)
  loss = lambda r, c: jnp.sum(kernel.lbs(mano_model, r, betas, chunk_size=c).vertices ** 2)
  np.testing.assert_allclose(
    jax.grad(loss)(rot, 128), jax.grad(loss)(rot, None), rtol=1e-4, atol=1e-5
  )
