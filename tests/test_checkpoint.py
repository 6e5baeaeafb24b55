import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import checkpoint, sharding


def _state(mesh, mode="replicated"):
  params = {"w": jnp.arange(64 * 512, dtype=jnp.float32).reshape(64, 512), "b": jnp.ones(512)}
  shard = sharding.param_shardings(params, mesh, mode)
  params = jax.device_put(params, shard)
  return {"params": params, "step": jnp.asarray(7), "rng": jax.random.key_data(jax.random.key(3))}


def test_save_restore_keep_n(tmp_path):
  mesh = sharding.make_mesh()
  ck = checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2)
  assert ck.restore_latest(checkpoint.abstract_like(_state(mesh))) is None
  state = _state(mesh)
  for step in (1, 2, 3):
    ck.save(step, state, {"params": state["params"]}, {"data_position": step * 10})
  ck.wait()
  assert ck.all_steps() == [2, 3]
  step, restored, meta = ck.restore_latest(checkpoint.abstract_like(state))
  assert step == 3 and meta == {"data_position": 30}
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, state
  )
  ck.close()


def test_restore_onto_a_different_mesh(tmp_path):
  saved = _state(sharding.make_mesh({"data": 8}), "fsdp")
  ck = checkpoint.Checkpointer(tmp_path / "ckpt")
  ck.save(5, saved, {"params": saved["params"]}, force=True)
  ck.wait()
  other = sharding.make_mesh({"data": 2, "model": 4})
  target = sharding.param_shardings(saved["params"], other, "fsdp")
  shardings = {
    "params": target,
    "step": sharding.replicated(other),
    "rng": sharding.replicated(other),
  }
  _, restored, _ = ck.restore_latest(checkpoint.abstract_like(saved, shardings))
  assert restored["params"]["w"].sharding.mesh.shape == other.shape
  np.testing.assert_array_equal(
    np.asarray(restored["params"]["w"]), np.asarray(saved["params"]["w"])
  )
  ck.close()


def test_unreadable_checkpoint_is_named(tmp_path):
  mesh = sharding.make_mesh()
  ck = checkpoint.Checkpointer(tmp_path / "ckpt")
  state = _state(mesh)
  ck.save(4, state, {"params": state["params"]}, force=True)
  ck.wait()
  for f in (tmp_path / "ckpt" / "4" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*/ckpt/4 cannot be restored"):
    ck.restore_latest(checkpoint.abstract_like(state))


def test_params_item_reads_alone_with_or_without_a_target(tmp_path):
  mesh = sharding.make_mesh()
  ck = checkpoint.Checkpointer(tmp_path / "ckpt")
  state = _state(mesh)
  ck.save(3, state, {"params": state["params"], "extra": {"c": jnp.ones(2)}}, force=True)
  ck.wait()
  raw = ck.restore_params(3)  # as saved: another model can pick what fits
  assert sorted(raw) == ["extra", "params"] and isinstance(raw["params"]["w"], np.ndarray)
  np.testing.assert_array_equal(raw["params"]["w"], np.asarray(state["params"]["w"]))
  target = checkpoint.abstract_like({"params": state["params"], "extra": {"c": jnp.ones(2)}})
  onto = ck.restore_params(3, target)
  assert onto["params"]["b"].sharding == state["params"]["b"].sharding
  ck.close()


def test_another_models_checkpoint_is_refused_naming_the_leaf(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path / "c")
  state = {"net": {"w": jnp.ones((3, 4))}, "b": jnp.zeros(2)}
  ck.save(1, state, state, {}, force=True)
  ck.wait()
  wider = {"net": {"w": jnp.ones((3, 5))}, "b": jnp.zeros(2)}
  with pytest.raises(
    checkpoint.CheckpointError, match=r"\['net'\]\['w'\] saved \(3, 4\), wanted \(3, 5\)"
  ):
    ck.restore(1, checkpoint.abstract_like(wider))
  ck.close()
