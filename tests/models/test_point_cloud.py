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


def _project(K, T, X):
  """X [1, 1, 21, s, 3] -> uv [1, 1, v, 21, s, 2] in every view."""
  s = X.shape[3]
  uv, _ = cameras.world_to_image(K[:, None], T[:, None], X.reshape(1, 1, 1, 21 * s, 3))
  return uv.reshape(1, 1, K.shape[0], 21, s, 2)


def test_points_lie_on_the_rays_of_their_hypotheses():
  """Noise-free hypotheses (one 3D point per hypothesis, projected into every view): the mode,
  the view-pair points and every sample triangulate back onto their 3D point; with noisy ones,
  the points stay within about a pixel of each view's hypothesis."""
  K, T = _rig()
  P = cameras.projection_matrix(K, T)[None, None]  # [1, 1, v, 3, 4]
  X = jax.random.normal(jax.random.key(0), (1, 1, 21, 5, 3)) * 0.05
  uv = _project(K, T, X)
  w = jnp.ones((1, 1, 4, 21))
  x, valid, view_w, err = point_cloud.build(P, uv, w, pairs=3, size=128)
  assert x.shape == (1, 1, 21, 1 + 3 + 4, 3) and bool(valid.all())
  np.testing.assert_allclose(x[..., :4, :], jnp.repeat(X[..., :1, :], 4, -2), atol=1e-4)
  np.testing.assert_allclose(x[..., 4:, :], X[..., 1:, :], atol=1e-4)
  assert float(err[..., :4, :].max()) < 0.05  # pixels, from the modes
  np.testing.assert_allclose(view_w, 1.0, atol=1e-4)
  noisy = uv + jax.random.normal(jax.random.key(1), uv.shape)
  x2, _, _, _ = point_cloud.build(P, noisy, w, pairs=3, size=128)
  expected = jnp.concatenate([X[..., :1, :]] * 4 + [X[..., 1:, :]], -2)
  assert float(jnp.abs(x2 - expected).max()) < 0.01
  np.testing.assert_array_equal(point_cloud.kinds(3, 4), [0, 1, 1, 1, 2, 2, 2, 2])


def test_a_wrong_view_is_out_voted_and_zero_weight_views_ignored():
  """One view's modes and samples are 40 px off with full weight: the robust mode and the
  samples (triangulated with the mode's view weights) stay on the point; the wrong view's
  weight falls; the best view pairs exclude it. A zero-weight view counts for nothing."""
  K, T = _rig(v=5)
  P = cameras.projection_matrix(K, T)[None, None]
  X = jnp.zeros((1, 1, 21, 3, 3)) + jnp.array([0.01, -0.02, 0.03])
  uv = _project(K, T, X).at[:, :, 3].add(40.0)  # view 3 is wrong
  x, _, view_w, _ = point_cloud.build(P, uv, jnp.ones((1, 1, 5, 21)), pairs=2, size=128)
  np.testing.assert_allclose(x, jnp.broadcast_to(X[..., :1, :], x.shape), atol=1e-3)
  assert float(view_w[..., 3].max()) < 0.02 and float(view_w[..., :3].min()) > 0.9
  w0 = jnp.ones((1, 1, 5, 21)).at[:, :, 3].set(0.0)
  x0, _, _, _ = point_cloud.build(P, uv, w0, pairs=2, size=128)
  np.testing.assert_allclose(x0, jnp.broadcast_to(X[..., :1, :], x0.shape), atol=1e-4)


def test_fusion_follows_the_logits_over_valid_points():
  x = jnp.array([[[0.0, 0, 0], [1.0, 0, 0], [9.0, 9, 9]]])
  valid = jnp.array([[True, True, False]])
  fused, w = point_cloud.fuse(x, valid, jnp.array([[0.0, jnp.log(3.0), 50.0]]))
  np.testing.assert_allclose(w, [[0.25, 0.75, 0.0]], atol=1e-6)
  np.testing.assert_allclose(fused, [[0.75, 0, 0]], atol=1e-6)
  rms, centre = point_cloud.spread(x, valid, w, jnp.zeros((1, 3)))
  np.testing.assert_allclose(rms, [jnp.sqrt(0.75)], atol=1e-5)


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
