import jax
import jax.numpy as jnp
import numpy as np

from handflow.geometry import cameras
from handflow.models import point_cloud, sampling


def _rig(v=4, key=0):
  rng = np.random.default_rng(key)
  eyes = rng.normal(size=(v, 3))
  eyes = 0.5 * eyes / np.linalg.norm(eyes, axis=-1, keepdims=True)
  T = cameras.look_at(jnp.asarray(eyes, jnp.float32), jnp.zeros((v, 3)))
  K = jnp.asarray([[200.0, 0, 64], [0, 200.0, 64], [0, 0, 1]])
  return jnp.broadcast_to(K, (v, 3, 3)), T


def test_points_lie_on_the_rays_of_their_hypotheses():
  """With noise-free hypotheses (one 3D point per hypothesis, projected into every view), each
  triangulated point reprojects onto its hypotheses; with noisy ones, the point lies on the
  weighted compromise, and its projection is close to every view's hypothesis."""
  K, T = _rig()
  P = cameras.projection_matrix(K, T)[None, None]  # [1, 1, v, 3, 4]
  X = jax.random.normal(jax.random.key(0), (1, 1, 21, 5, 3)) * 0.05
  uv, _ = cameras.world_to_image(K[:, None], T[:, None], X.reshape(1, 1, 1, 105, 3))
  uv = uv.reshape(1, 1, 4, 21, 5, 2)
  w = jnp.ones((1, 1, 4, 21))
  x, valid, err = point_cloud.triangulate_points(P, uv, w)
  assert x.shape == (1, 1, 21, 5, 3) and bool(valid.all())
  np.testing.assert_allclose(x, X, atol=1e-4)
  assert float(err.max()) < 0.05  # pixels
  # Hypotheses off by a pixel: the point stays within a pixel of each view's ray.
  noisy = uv + jax.random.normal(jax.random.key(1), uv.shape)
  x2, _, err2 = point_cloud.triangulate_points(P, noisy, w)
  assert float(jnp.median(err2)) < 1.5 and float(jnp.abs(x2 - X).max()) < 0.01


def test_zero_weight_views_are_ignored():
  K, T = _rig()
  P = cameras.projection_matrix(K, T)[None, None]
  X = jnp.zeros((1, 1, 21, 1, 3)) + jnp.array([0.01, -0.02, 0.03])
  uv, _ = cameras.world_to_image(K[:, None], T[:, None], X.reshape(1, 1, 1, 21, 3))
  uv = uv.reshape(1, 1, 4, 21, 1, 2).at[:, :, 3].add(40.0)  # view 3 is wrong
  w = jnp.ones((1, 1, 4, 21)).at[:, :, 3].set(0.0)
  x, valid, _ = point_cloud.triangulate_points(P, uv, w)
  np.testing.assert_allclose(x, X, atol=1e-4)


def test_canonical_frame_undoes_a_similarity():
  rng = np.random.default_rng(0)
  template = jnp.asarray(rng.normal(size=(21, 3)) * 0.05, jnp.float32)
  R = jnp.asarray(cameras.look_at(jnp.array([0.3, 0.2, 0.5]), jnp.zeros(3))[:3, :3])
  t = jnp.array([0.1, -0.2, 0.4])
  x = 1.3 * template @ R.T + t
  s, R_est, root = point_cloud.canonical_frame(x[None, None], template)
  np.testing.assert_allclose(s, 1.3, rtol=1e-4)
  np.testing.assert_allclose(R_est[0, 0], R, atol=1e-4)
  canon = point_cloud.to_canonical(x[None, None], s, R_est, root)[0, 0]
  expected = (template - template[point_cloud.ROOT]) / point_cloud.NORM_M
  np.testing.assert_allclose(canon, expected, atol=1e-4)


def test_bilinear_sample_interpolates_and_zeroes_outside():
  fmap = jnp.arange(4 * 6, dtype=jnp.float32).reshape(1, 4, 6, 1)
  # Cell centres sit at ((i + 0.5) / w, (j + 0.5) / h).
  uv = jnp.array([[[0.5 / 6, 0.5 / 4], [1.0 / 6, 0.5 / 4], [1.5 / 6, 1.0 / 4], [2.0, 0.5]]])
  out = sampling.bilinear_sample(fmap, uv)[0, :, 0]
  np.testing.assert_allclose(out[:3], [0.0, 0.5, 4.0], atol=1e-5)
  assert float(out[3]) == 0.0


def test_spread_of_valid_points():
  x = jnp.array([[[0.0, 0, 0], [2.0, 0, 0], [100.0, 0, 0]]])
  valid = jnp.array([[True, True, False]])
  rms, mean = point_cloud.spread(x, valid)
  np.testing.assert_allclose(rms, [1.0]) and np.testing.assert_allclose(mean, [[1.0, 0, 0]])
