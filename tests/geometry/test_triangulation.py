import jax
import jax.numpy as jnp
import numpy as np

from handflow.geometry import cameras, triangulation


def _setup(rig, n=21, seed=0):
  K, T = rig
  x = np.random.default_rng(seed).normal(0, 0.05, (n, 3)).astype(np.float32)
  uv, _ = cameras.world_to_image(K, T, np.broadcast_to(x, (8, n, 3)))  # [v, n, 2]
  P = cameras.projection_matrix(K, T)
  return P, x, jnp.swapaxes(uv, 0, 1)  # uv [n, v, 2]


def test_exact_on_noise_free_views(rig):
  P, x, uv = _setup(rig)
  got, valid = triangulation.triangulate(P, uv)
  assert valid.all()
  np.testing.assert_allclose(got, x, atol=2e-5)  # 20 microns, float32
  r = triangulation.reprojection_error(P, got, uv)
  assert float(r.max()) < 0.05


def test_zero_weight_views_are_ignored(rig):
  P, x, uv = _setup(rig)
  bad = uv.at[:, 3].add(80.0)  # view 3 is wrong ...
  w = jnp.ones(uv.shape[:-1]).at[:, 3].set(0.0)  # ... but has weight 0
  got, valid = triangulation.triangulate(P, bad, w)
  assert valid.all()
  np.testing.assert_allclose(got, x, atol=3e-5)


def test_fewer_than_two_views_is_invalid_and_finite(rig):
  P, x, uv = _setup(rig, n=3)
  w = jnp.zeros(uv.shape[:-1]).at[0, 2].set(1.0).at[1, :].set(0.0).at[2, 4:6].set(1.0)
  got, valid = triangulation.triangulate(P, uv, w)
  np.testing.assert_array_equal(valid, [False, False, True])
  np.testing.assert_allclose(got[:2], 0.0)
  np.testing.assert_allclose(got[2], x[2], atol=5e-5)
  g = jax.grad(lambda u: jnp.sum(triangulation.triangulate(P, u, w)[0] ** 2))(uv)
  assert np.isfinite(g).all()


def test_gradients_finite_and_point_the_right_way(rig):
  P, x, uv = _setup(rig, n=1)
  target = jnp.asarray(x) + jnp.asarray([0.01, 0.0, 0.0])
  loss = lambda u: jnp.sum((triangulation.triangulate(P, u)[0] - target) ** 2)
  g = jax.grad(loss)(uv)
  assert np.isfinite(g).all()
  assert loss(uv - 50.0 * g) < loss(uv)


def test_robust_to_one_outlier_view(rig):
  P, x, uv = _setup(rig)
  rng = np.random.default_rng(3)
  noisy = uv + rng.normal(0, 0.5, uv.shape).astype(np.float32)
  noisy = noisy.at[:, 5].add(jnp.asarray([60.0, -45.0]))  # one view is far off for every joint
  plain, _ = triangulation.triangulate(P, noisy)
  robust, valid, w = triangulation.triangulate_robust(P, noisy)
  assert valid.all()
  err_plain = np.linalg.norm(plain - x, axis=-1).mean()
  err_robust = np.linalg.norm(robust - x, axis=-1).mean()
  assert err_robust < 0.002 < err_plain  # < 2 mm against several mm
  assert float(w[:, 5].max()) < 0.05 * float(w[:, :5].min())


def test_batched_leading_axes(rig):
  P, x, uv = _setup(rig)
  uv_b = jnp.stack([uv, uv + 0.0])  # [2, n, v, 2]
  got, valid = jax.jit(triangulation.triangulate)(P, uv_b)
  assert got.shape == (2, 21, 3) and valid.shape == (2, 21)
  got2, _, _ = jax.jit(triangulation.triangulate_robust)(P, uv_b)
  np.testing.assert_allclose(got2, got, atol=1e-4)
