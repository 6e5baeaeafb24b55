import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from handflow import optim


def _cfg(**kw):
  base = dict(
    name="adamw",
    learning_rate=1e-3,
    weight_decay=0.1,
    schedule="cosine",
    warmup_steps=10,
    end_factor=0.0,
    grad_clip=1.0,
  )
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_warmup_cosine_schedule_values():
  s = optim.schedule(_cfg(), 110)
  assert float(s(0)) == 0.0
  assert float(s(10)) == pytest.approx(1e-3)
  assert float(s(60)) == pytest.approx(0.5e-3, rel=1e-3)  # half way down the cosine
  assert float(s(110)) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_skips_biases_and_clipping_bounds_the_step():
  params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
  tx = optim.make_optimizer(_cfg(schedule="constant", warmup_steps=0, learning_rate=0.1), 100)
  state = tx.init(params)
  zero = jax.tree.map(jnp.zeros_like, params)
  upd, _ = tx.update(zero, state, params)
  assert float(jnp.abs(upd["w"]).max()) > 0  # decayed
  np.testing.assert_allclose(upd["b"], 0.0)  # not decayed
  huge = {"w": jnp.full((3, 3), 1e6), "b": jnp.full(3, 1e6)}
  clipped = optax.clip_by_global_norm(1.0).update(huge, optax.EmptyState())[0]
  assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_loss_goes_down_on_a_quadratic():
  params = {"w": jnp.full((4, 2), 3.0)}
  tx = optim.make_optimizer(_cfg(learning_rate=0.1, warmup_steps=5, weight_decay=0.0), 200)
  state = tx.init(params)
  loss = lambda p: jnp.sum(p["w"] ** 2)
  for _ in range(200):
    g = jax.grad(loss)(params)
    upd, state = tx.update(g, state, params)
    params = optax.apply_updates(params, upd)
  assert float(loss(params)) < 1e-2 * 72.0


def test_ema_and_bad_configs():
  e = optim.ema_update({"a": jnp.zeros(2)}, {"a": jnp.ones(2)}, 0.9)
  np.testing.assert_allclose(e["a"], 0.1)
  with pytest.raises(optim.OptimConfigError, match="warmup_steps = 10 must be < num_steps = 5"):
    optim.make_optimizer(_cfg(), 5)
  with pytest.raises(optim.OptimConfigError, match="optim.name = 'lion'"):
    optim.make_optimizer(_cfg(name="lion"), 100)
  with pytest.raises(optim.OptimConfigError, match="optim.schedule = 'step'"):
    optim.make_optimizer(_cfg(schedule="step"), 100)
