import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import checkpoint, optim, sharding, train, writers
from tests import train_helper as th

ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")


def _run_steps(mesh, n=3):
  tx, state, shards = _initial_state(mesh)
  it = th.batches(0)
  step = train.make_train_step(th.LinearMethod(), tx, shards, mesh)
  for _ in range(n):
    state, _ = step(state, sharding.global_batch(next(it), mesh))
  return train.params_to_numpy(state)


def test_sharded_step_equals_single_device():
  eight = _run_steps(sharding.make_mesh({"data": 8}))
  one = _run_steps(sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  for k in eight:
    np.testing.assert_allclose(eight[k], one[k], rtol=1e-5, atol=1e-6)


def test_loss_goes_down_and_everything_is_logged(tmp_path):
  cfg = th.config(60, eval_every=30, tensorboard=True)
  cfg.optim.learning_rate = 0.2
  m = th.LinearMethod()
  state = train.train_and_evaluate(cfg, tmp_path, m, th.batches, th.evaluate(m))
  rows = writers.read_jsonl(tmp_path / "metrics.jsonl")
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < 0.05 * losses[0]
  evals = [r for r in rows if "eval/abs_err" in r]
  assert [r["step"] for r in evals] == [30, 60]
  assert evals[1]["eval/abs_err"] < evals[0]["eval/abs_err"]
  assert int(state.step) == 60 and (tmp_path / "tb").is_dir()
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 60


def test_nan_batch_is_skipped_and_counted(tmp_path):
  state = train.train_and_evaluate(
    th.config(10), tmp_path, th.LinearMethod(), lambda s: th.batches(s, nan_steps={3})
  )
  assert int(state.skipped) == 1 and int(state.nonfinite) == 0
  assert all(np.isfinite(v).all() for v in train.params_to_numpy(state).values())
  rows = writers.read_jsonl(tmp_path / "metrics.jsonl")
  assert rows[-1]["skipped"] == 1.0


def test_too_many_nonfinite_in_a_row_stops_with_a_message(tmp_path):
  with pytest.raises(train.NonFiniteError, match="3 non-finite losses or gradients in a row"):
    train.train_and_evaluate(
      th.config(20),
      tmp_path,
      th.LinearMethod(),
      lambda s: th.batches(s, nan_steps=set(range(4, 20))),
    )


def _script(workdir, steps, sleep=0.0, method="linear"):
  return subprocess.Popen(
    [sys.executable, "-m", "tests.train_helper", str(workdir), str(steps), str(sleep), method],
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def _wait_for_checkpoint(workdir, min_step, proc, timeout=120):
  t0 = time.time()
  while time.time() - t0 < timeout:
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
    if steps and steps[-1] >= min_step:
      return
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    time.sleep(0.2)
  raise TimeoutError


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, method="teacher"):
  """Bit-identical: parameters, optimiser, RNG stream, and the teacher method's EMA teacher and
  running centre (its extra state) under a momentum schedule."""
  straight = _script(tmp_path / "straight", 24, method=method)
  assert straight.wait(timeout=300) == 0, straight.stderr.read().decode()[-2000:]
  killed = _script(tmp_path / "killed", 24, sleep=0.15, method=method)
  _wait_for_checkpoint(tmp_path / "killed", 6, killed)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not (tmp_path / "killed" / "final.npz").exists()
  resumed = _script(tmp_path / "killed", 24, method=method)
  assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
  a, b = np.load(tmp_path / "straight" / "final.npz"), np.load(tmp_path / "killed" / "final.npz")
  assert "center" in a.files and "teacher/w" in a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])
  # The rows the killed run logged past its checkpoint are dropped: each step once.
  rows = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r)["step"] for r in rows] == [5, 10, 15, 20, 24]  # and the last step


def test_teacher_follows_its_momentum_schedule_and_skipped_steps_keep_it(tmp_path):
  """extra = the EMA of the parameters with the scheduled momentum, step by step; a non-finite
  step leaves the teacher and the centre untouched."""
  mesh = sharding.make_mesh()
  method = th.TeacherMethod(num_steps=8)
  cfg = th.config(8)
  tx = optim.make_optimizer(cfg.optim, 8)
  batch = sharding.global_batch(next(th.batches(0)), mesh)
  state, shards = train.create_train_state(
    method, tx, jax.random.key(0), batch, mesh, "replicated", False
  )
  step = train.make_train_step(method, tx, shards, mesh)
  teacher = jax.device_get(state.extra["teacher"])
  it = th.batches(0, nan_steps={4})
  for i in range(8):
    before = jax.device_get(state.extra)
    state, out = step(state, sharding.global_batch(next(it), mesh))
    after = jax.device_get(state.extra)
    if i == 4:
      assert int(out["nonfinite"]) == 1
      jax.tree.map(np.testing.assert_array_equal, after, before)
      continue
    m = float(method.momentum(i))
    assert float(out["momentum"]) == pytest.approx(m)
    params = jax.device_get(state.params)
    teacher = jax.tree.map(lambda t, p, m=m: m * t + (1 - m) * p, teacher, params)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), after["teacher"], teacher
    )
  assert float(method.momentum(0)) == pytest.approx(0.9) and float(method.momentum(8)) == 1.0
  assert float(state.extra["center"]) != 0.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_exits_and_the_run_resumes_with_each_step_logged_once(tmp_path, sig):
  """SIGTERM (preemption) or SIGINT (Ctrl-C) mid-run: the step finishes, a checkpoint flagged as
  preempted is saved whole (no orbax temporary directory left), the process exits with
  128 + the signal's number naming the step; the same command then finishes the run, and
  metrics.jsonl holds each logged step once."""
  proc = _script(tmp_path, 60, sleep=0.1)
  _wait_for_checkpoint(tmp_path, 4, proc)
  proc.send_signal(sig)
  assert proc.wait(timeout=120) == 128 + sig
  err = proc.stderr.read().decode()
  assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name} at step" in err, err
  ck = checkpoint.Checkpointer(tmp_path / "checkpoints")
  step = ck.latest_step()
  assert 4 <= step < 60 and f"at step {step} of 60" in err
  assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
  _, meta = ck.restore(step, _abstract_state())
  assert meta["preempted"] is True and meta["data_position"] == step
  assert not (tmp_path / "final.npz").exists()
  resumed = _script(tmp_path, 60)
  assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
  logged = [r["step"] for r in writers.read_jsonl(tmp_path / "metrics.jsonl")]
  assert logged == list(range(5, 61, 5))


def _abstract_state():
  _, state, shards = _initial_state(sharding.make_mesh())
  return checkpoint.abstract_like(state, shards)


def _initial_state(mesh):
  """(optimiser, initial TrainState, its shardings) of the stand-in method on `mesh`."""
  tx = optim.make_optimizer(th.config(10).optim, 10)
  batch = sharding.global_batch(next(th.batches(0)), mesh)
  state, shards = train.create_train_state(
    th.LinearMethod(), tx, jax.random.key(0), batch, mesh, "replicated", False
  )
  return tx, state, shards


def test_two_processes_with_jax_distributed_end_identical(tmp_path):
  import random

  port = str(random.randint(20000, 40000))
  env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "tests.dist_helper", str(tmp_path / "multi"), str(i), "2", port, "6"],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )
    for i in range(2)
  ]
  for p in procs:
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
  env4 = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  single = subprocess.run(
    [sys.executable, "-m", "tests.dist_helper", str(tmp_path / "single"), "0", "1", port, "6"],
    env=env4,
    capture_output=True,
  )
  assert single.returncode == 0, single.stderr.decode()[-3000:]
  a, b = np.load(tmp_path / "multi" / "final_0.npz"), np.load(tmp_path / "multi" / "final_1.npz")
  ref = np.load(tmp_path / "single" / "final_0.npz")
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])  # identical on both hosts
    np.testing.assert_allclose(a[k], ref[k], rtol=1e-5, atol=1e-6)  # = one process, same batches
  # Only process 0 wrote the logs.
  assert (tmp_path / "multi" / "metrics.jsonl").exists()


def test_bfloat16_compute_and_profiler_trace(tmp_path):
  cfg = th.config(8, compute_dtype="bfloat16", profile={"start": 3, "steps": 2})
  state = train.train_and_evaluate(cfg, tmp_path, th.LinearMethod(), th.batches)
  params = train.params_to_numpy(state)
  assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in params.values())
  assert np.isfinite([r["loss"] for r in writers.read_jsonl(tmp_path / "metrics.jsonl")]).all()
  f32 = train.train_and_evaluate(th.config(8), tmp_path / "f32", th.LinearMethod(), th.batches)
  for k, v in train.params_to_numpy(f32).items():
    np.testing.assert_allclose(params[k], v, atol=0.05)  # bfloat16 rounding, same trajectory
  assert any((tmp_path / "profile").rglob("*.xplane.pb"))
  with pytest.raises(ValueError, match="compute_dtype = 'float16'"):
    train.make_train_step(th.LinearMethod(), None, None, None, compute_dtype="float16")


def test_resume_and_init_from_other_runs(tmp_path):
  first = train.train_and_evaluate(th.config(6), tmp_path / "a", th.LinearMethod(), th.batches)
  other = str(tmp_path / "a" / "checkpoints")
  cont = train.train_and_evaluate(
    th.config(8, resume=other), tmp_path / "b", th.LinearMethod(), th.batches
  )
  assert int(cont.step) == 8  # continued from step 6
  init = train.train_and_evaluate(
    th.config(3, init_from=other), tmp_path / "c", th.LinearMethod(), th.batches
  )
  assert int(init.step) == 3  # started afresh from the parameters of `a`
  rows = writers.read_jsonl(tmp_path / "c" / "metrics.jsonl")
  first_loss = writers.read_jsonl(tmp_path / "a" / "metrics.jsonl")[0]["loss"]
  assert rows[0]["loss"] < first_loss  # better than a cold start
  with pytest.raises(checkpoint.CheckpointError, match="config.init_from = .*no checkpoint there"):
    train.train_and_evaluate(
      th.config(3, init_from=str(tmp_path / "none")), tmp_path / "d", th.LinearMethod(), th.batches
    )
  del first


class _Wide(th.LinearMethod):
  """A parameter big enough for FSDP to shard, a small one it replicates, and extra state."""

  def init(self, rng, batch):
    params = {"w": jax.random.normal(rng, (64, 512)), "b": jnp.zeros((1,))}
    return params, {"teacher": params}

  def loss_fn(self, params, extra, batch, rng, step):
    del extra, rng, step
    loss = jnp.mean((batch["x"] @ params["w"][:4, :1])[:, 0] + params["b"][0] - batch["y"]) ** 2
    return loss, ({}, None)


@pytest.mark.parametrize("frozen", [[], ["b"]])
def test_optimiser_state_is_sharded_like_its_parameters(frozen):
  mesh = sharding.make_mesh()
  method = _Wide()
  cfg = th.config(4)
  cfg.optim.frozen = frozen
  batch = sharding.global_batch(next(th.batches(0)), mesh)
  abstract, _ = train.abstract_init(method, jax.random.key(0), batch)
  cfg.num_steps = 4
  tx = train.make_optimizer(cfg, method, abstract)
  state, shards = train.create_train_state(
    method, tx, jax.random.key(0), batch, mesh, "fsdp", False
  )
  w_sharding = state.params["w"].sharding
  assert w_sharding.spec == jax.sharding.PartitionSpec(None, "data")
  assert state.extra["teacher"]["w"].sharding == w_sharding
  big = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "shape", ()) == (64, 512)]
  assert len(big) == 2 and all(x.sharding == w_sharding for x in big)  # Adam's mu and nu
  step = train.make_train_step(method, tx, shards, mesh)
  state, out = step(state, batch)
  assert np.isfinite(float(out["loss"]))


def test_frozen_groups_checkpoint_and_resume(tmp_path):
  """Frozen leaves carry no optimiser state (MaskedNode): saving, restoring and continuing work."""
  cfg = th.config(4)
  cfg.optim.frozen, cfg.optim.lr_mults = ["b"], [("w", 0.1)]
  first = train.train_and_evaluate(cfg, tmp_path, th.LinearMethod(), th.batches)
  assert float(first.params["b"][0]) == 0.0  # frozen at its initial value
  cfg.num_steps = 6
  more = train.train_and_evaluate(cfg, tmp_path, th.LinearMethod(), th.batches)
  assert int(more.step) == 6 and float(more.params["b"][0]) == 0.0
