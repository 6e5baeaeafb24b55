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


def _groups_cfg(**kw):
  return _cfg(schedule="constant", warmup_steps=0, learning_rate=0.01, grad_clip=0.0, **kw)


def _step(tx, params, grads):
  upd, _ = tx.update(grads, tx.init(params), params)
  return upd


def test_a_frozen_group_does_not_move_and_a_tenth_multiplier_moves_ten_times_less():
  params = {
    "backbone": {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}},
    "head": {"kernel": jnp.ones((3, 2))},
    "stem": {"kernel": jnp.ones((2, 2))},
  }
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
  plain = _step(optim.make_optimizer(_groups_cfg(), 10, params), params, grads)
  cfg = _groups_cfg(lr_mults=[("backbone/.*", 0.1)], frozen=["stem"])
  labels = {
    "backbone": {"conv": {"kernel": "b", "bias": "b"}},
    "head": {"kernel": "h"},
    "stem": {"kernel": "stem"},
  }
  tx = optim.make_optimizer(cfg, 10, params, labels)
  grouped = _step(tx, params, grads)
  for k in ("kernel", "bias"):  # weight decay included: the whole update scales
    np.testing.assert_allclose(
      grouped["backbone"]["conv"][k], 0.1 * plain["backbone"]["conv"][k], rtol=1e-6
    )
  np.testing.assert_allclose(grouped["head"]["kernel"], plain["head"]["kernel"], rtol=1e-6)
  # "stem" is frozen through its label: no update over many steps, no optimiser moments.
  state, p = tx.init(params), params
  for _ in range(5):
    upd, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, upd)
  np.testing.assert_array_equal(p["stem"]["kernel"], params["stem"]["kernel"])
  assert float(jnp.abs(p["head"]["kernel"] - 1).max()) > 0
  moments = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (2, 2)]
  assert not moments
  assert "1 of 4 parameter arrays frozen, 2 with a learning-rate multiplier" in optim.describe(
    cfg, params, labels
  )


def test_layer_decay_and_no_decay_by_name():
  params = {
    "embed": {"pos": jnp.ones((4, 2))},
    "blocks_0": {"kernel": jnp.ones((2, 2))},
    "blocks_1": {"kernel": jnp.ones((2, 2))},
    "head": {"kernel": jnp.ones((2, 2))},
  }
  cfg = _groups_cfg(
    weight_decay=0.0,
    layer_decay={"rate": 0.5, "num_layers": 2, "layer": r"blocks_(\d+)", "embed": "embed"},
  )
  _, mults, _, _ = optim.leaf_groups(cfg, params)
  assert mults == {
    "embed": {"pos": 0.125},
    "blocks_0": {"kernel": 0.25},
    "blocks_1": {"kernel": 0.5},
    "head": {"kernel": 1.0},
  }
  _, _, _, decay = optim.leaf_groups(_cfg(no_decay=["embed/"]), params)
  assert decay["embed"]["pos"] is False and decay["head"]["kernel"] is True
  with pytest.raises(optim.OptimConfigError, match="freeze every parameter"):
    optim.make_optimizer(_groups_cfg(frozen=[".*"]), 10, params)
  with pytest.raises(optim.OptimConfigError, match="optim.frozen: '\\(' is not a regular"):
    optim.make_optimizer(_groups_cfg(frozen=["("]), 10, params)


def test_groups_without_the_parameter_tree_are_refused():
  with pytest.raises(optim.OptimConfigError, match="need the parameter tree"):
    optim.make_optimizer(_groups_cfg(frozen=["b"]), 10)
