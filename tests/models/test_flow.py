import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow.models import flow


@pytest.fixture(scope="module")
def flow_dist():
  """A flow with random (non-identity) weights over 3 x 21 joints."""
  m = flow.ConditionalFlow(layers=4, hidden=16)
  h = jax.random.normal(jax.random.key(0), (3, 21, 8))
  p = m.init(jax.random.key(1), h)
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  p = jax.tree.unflatten(
    tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )
  return flow.distribution(*m.apply(p, h))


def test_log_prob_of_samples_matches_sample_log_prob(flow_dist):
  x, lp = flow.sample(flow_dist, jax.random.key(3), 16)
  assert x.shape == (16, 3, 21, 2) and lp.shape == (16, 3, 21)
  np.testing.assert_allclose(flow_dist.log_prob(x), lp, atol=1e-4)
  assert np.all(np.isfinite(np.asarray(lp)))


def test_density_integrates_to_one(flow_dist):
  # Riemann sum of p(x) over a wide grid, for one joint.
  g = jnp.linspace(-10.0, 10.0, 401)
  xx, yy = jnp.meshgrid(g, g)
  pts = jnp.stack([xx, yy], -1).reshape(-1, 1, 1, 2)
  pts = jnp.broadcast_to(pts, (pts.shape[0], 3, 21, 2))
  p = jnp.exp(jax.vmap(flow_dist.log_prob)(pts))[:, 1, 5]
  total = float(jnp.sum(p) * (g[1] - g[0]) ** 2)
  assert abs(total - 1.0) < 0.02


def test_hypotheses_vary_with_the_key_and_are_reproducible(flow_dist):
  a, _ = flow.sample(flow_dist, jax.random.key(4), 8)
  b, _ = flow.sample(flow_dist, jax.random.key(5), 8)
  c, _ = flow.sample(flow_dist, jax.random.key(4), 8)
  assert float(jnp.abs(a - b).mean()) > 0.3
  np.testing.assert_array_equal(a, c)
  assert float(jnp.std(a, axis=0).mean()) > 0.3  # the K samples differ


def test_zero_initialised_flow_is_the_standard_normal():
  m = flow.ConditionalFlow(layers=6, hidden=8)
  h = jnp.ones((2, 21, 4))
  dist = flow.distribution(*m.apply(m.init(jax.random.key(0), h), h))
  x = jax.random.normal(jax.random.key(1), (2, 21, 2))
  expected = -0.5 * jnp.sum(x**2, -1) - jnp.log(2 * jnp.pi)
  np.testing.assert_allclose(dist.log_prob(x), expected, atol=1e-5)
  mode, _ = flow.mode(dist)
  np.testing.assert_allclose(mode, 0.0, atol=1e-6)


def _eqns(jaxpr):
  for e in jaxpr.eqns:
    yield e
    for v in e.params.values():
      for sub in v if isinstance(v, tuple | list) else [v]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _eqns(inner)


def test_context_is_computed_once_outside_the_vmap():
  """The context projection (contracting the C = 32 joint features) runs once per joint: no
  dot over C produces a K-batched result."""
  m = flow.ConditionalFlow(layers=4, hidden=16)
  h = jnp.ones((5, 21, 32))
  p = m.init(jax.random.key(0), h)
  k = 7

  def fn(p, h, key):
    return flow.sample(flow.distribution(*m.apply(p, h)), key, k)[0]

  jaxpr = jax.make_jaxpr(fn)(p, h, jax.random.key(0)).jaxpr
  over_c = [
    e
    for e in _eqns(jaxpr)
    if e.primitive.name == "dot_general" and e.invars[0].aval.shape[-1:] == (32,)
  ]
  assert over_c, "the context projection was not found"
  assert all(k not in e.outvars[0].aval.shape for e in over_c)
