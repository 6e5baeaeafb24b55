"""UST-Hand on the tiny config: shapes through every stage, losses, a train step, evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ust as ust_config
from handflow import optim, sharding, train
from handflow.data import pipeline
from handflow.geometry import alignment
from handflow.hand import limits
from handflow.methods import ust_eval
from handflow.methods.ust import LOSS_TERMS, UST
from tests.data.test_synthetic_hands import tiny  # noqa: F401 - the shared tiny dataset


@pytest.fixture(scope="module")
def setup(tiny):  # noqa: F811
  config = ust_config.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  method = UST(config)
  batch = {
    k: jnp.asarray(v) for k, v in next(pipeline.batches(config, "test", train=False)).items()
  }
  params = method.init_params(jax.random.key(0), batch)
  return config, method, batch, params


def test_shapes_through_every_stage(setup):
  config, method, batch, params = setup
  b, t, v = batch["images"].shape[:3]
  k = config.model.num_hypotheses
  out = jax.jit(method.forward)(params, batch, jax.random.key(1))
  s1 = out["s1"]
  assert s1["mu"].shape == (b, t, v, 21, 2) and s1["sigma"].shape == (b, t, v, 21, 2)
  assert s1["hyp"].shape == (b, t, v, 21, k + 1, 2)
  assert out["points"].shape == (b, t, 21, k + 1, 3) and out["valid"].shape == (b, t, 21, k + 1)
  assert out["rotmats"].shape == (b, t, 16, 3, 3)
  assert out["joints"].shape == (b, t, 21, 3)
  assert out["vertices"].shape == (b, t, method.model.num_vertices, 3)
  real = np.asarray(batch["mask"]) > 0
  assert np.all(np.isfinite(np.asarray(out["vertices"])[real]))
  pred = jax.jit(method.predict)(params, batch)
  assert pred["uv_hypotheses"].shape == (b, t, v, 21, k, 2)
  assert pred["uncertainty"].shape == (b, t, 21) and bool(jnp.all(pred["uncertainty"] >= 0))


def test_untrained_model_fits_the_flat_hand_to_the_triangulated_modes(setup):
  """The head starts at zero: refined joints = the modes, and the output is the flat mean hand
  placed on them by the best similarity (no reflection)."""
  _, method, batch, params = setup
  out = jax.jit(method.forward)(params, batch, jax.random.key(1))
  modes = out["points"][..., 0, :]
  np.testing.assert_allclose(out["refined"][:2], modes[:2], atol=1e-5)
  tmpl = jnp.broadcast_to(jnp.asarray(method.template), modes.shape)
  expected = alignment.procrustes(tmpl, modes, allow_reflection=False)
  np.testing.assert_allclose(out["joints"][:2], expected[:2], atol=1e-4)


def test_hypotheses_vary_with_the_key_and_collapse_with_the_scale(setup):
  config, method, batch, params = setup
  a = method.stage1_outputs(params, batch, jax.random.key(1), 8)["hyp"][..., 1:, :]
  b = method.stage1_outputs(params, batch, jax.random.key(2), 8)["hyp"][..., 1:, :]
  assert float(jnp.abs(a - b).mean()) > 1e-3
  # Shrinking sigma (the flow's scale) by 1000x collapses the hypotheses onto mu.
  p = jax.tree_util.tree_map_with_path(
    lambda path, x: x - 20.0 if "Dense_3" in jax.tree_util.keystr(path) and x.ndim == 1 else x,
    params,
  )
  small = method.stage1_outputs(p, batch, jax.random.key(1), 8)
  spread = jnp.abs(small["hyp"] - small["mu"][..., None, :]).max()
  assert float(small["sigma"].max()) < 0.01 and float(spread) < 0.05


def test_all_losses_finite_with_finite_gradients(setup):
  config, method, padded, params = setup
  batch = {
    k: jnp.asarray(v) for k, v in next(pipeline.batches(config, "train", train=True)).items()
  }
  (loss, metrics), grads = jax.jit(jax.value_and_grad(method.loss_fn, has_aux=True))(
    params, batch, jax.random.key(1)
  )
  assert np.isfinite(float(loss))
  for name in LOSS_TERMS:
    assert np.isfinite(float(metrics[f"loss/{name}"])), name
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(optax.tree.norm(grads)) > 0
  # Padded samples (all-zero cameras) count for nothing and do not poison the loss.
  assert np.isfinite(float(jax.jit(method.loss_fn)(params, padded, jax.random.key(1))[0]))


def test_joint_limits_penalise_hyperextension_not_a_curl(setup):
  method = setup[1]
  # A finger bent backwards by 1 rad violates the MCP flexion limit; a natural curl does not.
  axes = limits.joint_axes(method.model)
  back = jnp.zeros((15, 3)).at[3].set(1.0 * axes[3, 0])  # + flexion axis = extension
  curl = jnp.zeros((15, 3)).at[3].set(-1.0 * axes[3, 0])
  assert float(limits.violation(back, axes).sum()) == pytest.approx(0.8, abs=1e-5)  # MCP: >= -0.2
  assert float(limits.violation(curl, axes).sum()) == 0.0
  twist = jnp.zeros((15, 3)).at[3].set(0.5 * axes[3, 2])
  assert float(limits.violation(twist, axes)[3, 2]) == pytest.approx(0.5 - limits.TWIST_MAX)


def test_one_train_step_lowers_the_loss_on_its_batch(setup):
  config, method, batch, _ = setup
  mesh = sharding.make_mesh({"data": -1})
  config = config.copy_and_resolve_references()
  config.optim.warmup_steps, config.optim.learning_rate = 0, 1e-3
  tx = optim.make_optimizer(config.optim, 10)
  train_batch = next(pipeline.batches(config, "train", train=True))
  gb = sharding.global_batch(train_batch, mesh)
  state, shards = train.create_train_state(
    method, tx, jax.random.key(0), gb, mesh, "replicated", False
  )
  step = train.make_train_step(method, tx, shards, mesh)
  rng = jax.random.key(5)
  before = float(method.loss_fn(state.params, gb, rng)[0])
  for _ in range(3):
    state, out = step(state, gb)
    assert int(out["nonfinite"]) == 0
  after = float(method.loss_fn(state.params, gb, rng)[0])
  assert after < before


def test_evaluation_on_the_tiny_test_split(setup):
  config, method, _, params = setup
  mesh = sharding.make_mesh({"data": -1})
  stats_fn = train.make_eval_stats(method, mesh)
  res = train.evaluate(
    stats_fn, params, lambda: pipeline.batches(config, "test", train=False), mesh
  )
  for key in ("hanco/MPJPE", "hanco/MPVPE", "rootrel/PA-MPVPE", "teacher/hanco/MPJPE"):
    assert np.isfinite(res[key]) and res[key] > 0, key
  for key in ("calib/2d_50", "calib/3d_90"):
    assert 0.0 <= res[key] <= 1.0
  # PA removes scale, rotation and translation: never worse than root alignment alone.
  assert res["rootrel/PA-MPJPE"] <= res["rootrel/MPJPE"] + 1e-6


def test_teacher_is_exact_on_exact_pseudo_labels(setup):
  config, method, batch, _ = setup
  exact = dict(batch, uv_pl=batch["uv"], conf=jnp.ones_like(batch["conf"]))
  x = ust_eval.teacher_joints(exact)
  real = np.asarray(batch["mask"]) > 0
  np.testing.assert_allclose(np.asarray(x)[real], np.asarray(batch["xyz"])[real], atol=2e-3)


@pytest.mark.parametrize("views,frames", [(2, 1), (2, 2)])
def test_any_number_of_views_and_frames(setup, views, frames):
  config, method, batch, params = setup
  sub = {
    k: (v[:, :frames, :views] if v.ndim >= 3 and k not in ("xyz", "verts") else v)
    for k, v in batch.items()
  }
  sub["xyz"], sub["verts"] = batch["xyz"][:, :frames], batch["verts"][:, :frames]
  out = method.predict(params, sub)
  assert out["joints"].shape[:2] == (batch["images"].shape[0], frames)
