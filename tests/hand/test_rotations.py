import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

from handflow.hand import rotations as rot

_aa = hnp.arrays(np.float32, (3,), elements=st.floats(-3.0, 3.0, width=32))


def _random_aa(n, seed=0, max_angle=np.pi):
  rng = np.random.default_rng(seed)
  axis = rng.normal(size=(n, 3))
  axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
  return (axis * rng.uniform(0, max_angle, (n, 1))).astype(np.float32)


class RoundTripTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_axis_angle_to_matrix_matches_scipy(self):
    aa = _random_aa(256)
    got = self.variant(rot.axis_angle_to_matrix)(aa)
    np.testing.assert_allclose(got, Rotation.from_rotvec(aa).as_matrix(), atol=2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matrix_to_quaternion_matches_scipy(self):
    r = Rotation.random(256, random_state=1)
    q = self.variant(rot.matrix_to_quaternion)(r.as_matrix().astype(np.float32))
    want = r.as_quat()[:, [3, 0, 1, 2]]  # scipy is scalar-last
    want *= np.sign(want[:, :1])
    np.testing.assert_allclose(q, want, atol=2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matrix_axis_angle_round_trip(self):
    aa = _random_aa(512, seed=2, max_angle=np.pi - 1e-3)
    back = self.variant(lambda a: rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(a)))(aa)
    np.testing.assert_allclose(back, aa, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_quaternion_round_trips(self):
    aa = _random_aa(256, seed=3, max_angle=np.pi - 1e-3)
    q = self.variant(rot.axis_angle_to_quaternion)(aa)
    np.testing.assert_allclose(q[:, [1, 2, 3, 0]], Rotation.from_rotvec(aa).as_quat(), atol=2e-6)
    np.testing.assert_allclose(self.variant(rot.quaternion_to_axis_angle)(q), aa, atol=2e-5)
    np.testing.assert_allclose(
      self.variant(rot.quaternion_to_matrix)(q), rot.axis_angle_to_matrix(aa), atol=2e-6
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_rot6d_round_trip_and_gram_schmidt(self):
    r = Rotation.random(128, random_state=4).as_matrix().astype(np.float32)
    d6 = self.variant(rot.matrix_to_rot6d)(r)
    np.testing.assert_allclose(self.variant(rot.rot6d_to_matrix)(d6), r, atol=2e-6)
    # Any non-degenerate 6D gives a proper rotation.
    raw = np.random.default_rng(5).normal(size=(128, 6)).astype(np.float32)
    m = rot.rot6d_to_matrix(raw)
    np.testing.assert_allclose(
      m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-5
    )
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-5)


def test_leading_batch_shapes():
  aa = _random_aa(24).reshape(2, 3, 4, 3)
  r = rot.axis_angle_to_matrix(aa)
  assert r.shape == (2, 3, 4, 3, 3)
  assert rot.matrix_to_axis_angle(r).shape == (2, 3, 4, 3)
  assert rot.matrix_to_rot6d(r).shape == (2, 3, 4, 6)
  assert rot.matrix_to_quaternion(r).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("axis", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
def test_exactly_pi(axis):
  axis = np.asarray(axis, np.float32) / np.linalg.norm(axis)
  r = Rotation.from_rotvec(axis * np.pi).as_matrix().astype(np.float32)
  aa = rot.matrix_to_axis_angle(r)
  assert np.isfinite(aa).all()
  np.testing.assert_allclose(np.linalg.norm(aa), np.pi, atol=1e-5)
  np.testing.assert_allclose(rot.axis_angle_to_matrix(aa), r, atol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-4, np.pi - 1e-4, np.pi])
def test_gradients_finite_at_0_and_pi(angle):
  aa0 = np.array([0.3, -0.5, 0.8], np.float32)
  aa0 *= angle / np.linalg.norm(aa0)
  target = jnp.asarray(Rotation.random(random_state=0).as_matrix(), jnp.float32)

  def loss_fwd(a):
    return jnp.sum((rot.axis_angle_to_matrix(a) - target) ** 2)

  def loss_inv(a):
    return jnp.sum(rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(a)) ** 2)

  def loss_6d(a):
    return jnp.sum(rot.rot6d_to_axis_angle(rot.axis_angle_to_rot6d(a)))

  for fn in (loss_fwd, loss_inv, loss_6d):
    g = jax.grad(fn)(jnp.asarray(aa0))
    assert np.isfinite(g).all(), (fn.__name__, angle, g)


def test_axis_angle_gradient_matches_finite_differences():
  aa = jnp.asarray([0.4, -0.2, 0.9], jnp.float64 if jax.config.x64_enabled else jnp.float32)
  f = lambda a: jnp.sum(rot.axis_angle_to_matrix(a) * jnp.arange(9.0).reshape(3, 3))
  g = jax.grad(f)(aa)
  eps = 1e-3
  fd = [(f(aa.at[i].add(eps)) - f(aa.at[i].add(-eps))) / (2 * eps) for i in range(3)]
  np.testing.assert_allclose(g, fd, rtol=2e-2, atol=2e-3)


@settings(max_examples=60, deadline=None)
@given(_aa)
def test_property_round_trip_via_matrix(aa):
  r = rot.axis_angle_to_matrix(aa)
  np.testing.assert_allclose(rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(r)), r, atol=3e-5)
  np.testing.assert_allclose(rot.quaternion_to_matrix(rot.matrix_to_quaternion(r)), r, atol=3e-5)
  np.testing.assert_allclose(rot.rot6d_to_matrix(rot.matrix_to_rot6d(r)), r, atol=3e-5)


def test_geodesic_angle():
  a = rot.axis_angle_to_matrix(jnp.asarray([0.0, 0.0, 0.3]))
  b = rot.axis_angle_to_matrix(jnp.asarray([0.0, 0.0, 1.0]))
  np.testing.assert_allclose(rot.geodesic_angle(a, b), 0.7, atol=1e-5)
