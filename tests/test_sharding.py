import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import sharding


def test_eight_fake_devices():
  assert jax.device_count() == 8


def test_mesh_from_config():
  m = sharding.make_mesh({"data": -1, "model": 2})
  assert dict(m.shape) == {"data": 4, "model": 2}
  assert dict(sharding.make_mesh().shape) == {"data": 8}
  with pytest.raises(sharding.ShardingError, match="does not divide the 8 devices"):
    sharding.make_mesh({"data": -1, "model": 3})
  with pytest.raises(sharding.ShardingError, match="has 4 slots for 8 devices"):
    sharding.make_mesh({"data": 2, "model": 2})
  with pytest.raises(sharding.ShardingError, match="needs a 'data' axis"):
    sharding.make_mesh({"model": -1})


def test_global_batch_is_sharded_over_data():
  mesh = sharding.make_mesh({"data": 4, "model": 2})
  local = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3), "m": np.ones(8)}
  g = sharding.global_batch(local, mesh)
  assert g["x"].shape == (8, 3)
  np.testing.assert_array_equal(np.asarray(g["x"]), local["x"])
  assert g["x"].sharding.spec == jax.sharding.PartitionSpec("data")
  starts = {s.index[0].start for s in g["x"].addressable_shards}
  assert starts == {0, 2, 4, 6}  # 4 data shards of 2 rows, each on 2 devices
  with pytest.raises(
    sharding.ShardingError, match="key 'x': per-host batch \\(6,\\) is not divisible"
  ):
    sharding.global_batch({"x": np.zeros((6, 3))}, mesh)


def test_sharded_computation_equals_single_device():
  mesh = sharding.make_mesh()
  x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
  w = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
  f = lambda x, w: jnp.mean(jnp.tanh(x @ w) ** 2)
  single = jax.jit(f)(x, w)
  sharded = jax.jit(f, in_shardings=(sharding.batch_sharding(mesh), sharding.replicated(mesh)))(
    sharding.global_batch({"x": x}, mesh)["x"], w
  )
  np.testing.assert_allclose(sharded, single, rtol=1e-6)


def test_param_shardings():
  mesh = sharding.make_mesh()
  params = {"big": jnp.zeros((64, 512)), "odd": jnp.zeros((63, 513)), "bias": jnp.zeros(512)}
  rep = sharding.param_shardings(params, mesh)
  assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(rep))
  fsdp = sharding.param_shardings(params, mesh, "fsdp")
  assert fsdp["big"].spec == jax.sharding.PartitionSpec(None, "data")
  assert fsdp["odd"].spec == jax.sharding.PartitionSpec()  # nothing divisible by 8
  assert fsdp["bias"].spec == jax.sharding.PartitionSpec()  # small: replicated
  with pytest.raises(sharding.ShardingError, match="unknown parameter sharding"):
    sharding.param_shardings(params, mesh, "zero9")


def test_distributed_is_not_guessed(monkeypatch):
  monkeypatch.delenv("HANDFLOW_DISTRIBUTED", raising=False)
  assert sharding.initialize_distributed() is False
