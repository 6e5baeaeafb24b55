"""The method-agnostic training loop.

  state = train_and_evaluate(config, workdir, method, train_batches, eval_batches)

`train_batches(start_step)` returns an iterator of per-host NumPy batches beginning at global
step `start_step` (the data position restored from a checkpoint); `eval_batches()` returns one
padded pass over the evaluation split (mask = 0 on padding) or is None.

Resume order: a checkpoint in `workdir/checkpoints` -> `config.resume` (a checkpoint directory:
the whole state) -> `config.init_from` (a checkpoint directory: parameters only) -> from
scratch. A checkpoint that cannot be read stops the run with its path; the run never silently
starts over.

One step is one jitted, pure `(state, batch) -> (state, metrics)` with the state donated and
sharded on a mesh (`config.mesh`, default all devices on "data"); the RNG is folded with the
step. A non-finite loss or gradient skips the update (the batch is consumed), is counted and
logged, and the run stops with a message after `config.max_nonfinite` in a row. SIGTERM
(preemption) saves a checkpoint at the end of the current step and returns.
`config.compute_dtype = "bfloat16"` computes the loss in bfloat16 (TPU); `config.profile =
{"start": s, "steps": n}` writes a profiler trace of steps s .. s+n-1 to `workdir/profile`.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from handflow import checkpoint, optim, sharding, writers
from handflow.eval import metrics as eval_metrics


class NonFiniteError(RuntimeError):
  """Too many non-finite losses or gradients in a row."""


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["step", "params", "opt_state", "rng", "ema", "nonfinite", "skipped"],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array  # [] int32: updates attempted (= batches consumed)
  params: object
  opt_state: object
  rng: jax.Array  # [2] uint32 key data (checkpointable)
  ema: object  # EMA of params, or None
  nonfinite: jax.Array  # [] int32: non-finite steps in a row
  skipped: jax.Array  # [] int32: non-finite steps in total


def create_train_state(method, tx, rng, batch, mesh, param_mode: str, ema: bool):
  """The initial state, created already sharded (jitted init with out_shardings)."""

  def init(rng):
    params = method.init_params(rng, batch)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
      ema=params if ema else None,
      nonfinite=jnp.zeros((), jnp.int32),
      skipped=jnp.zeros((), jnp.int32),
    )

  abstract = jax.eval_shape(init, rng)
  shardings = state_shardings(abstract, mesh, param_mode)
  return jax.jit(init, out_shardings=shardings)(rng), shardings


def state_shardings(abstract_state: TrainState, mesh, param_mode: str):
  """Parameters (and their EMA and optimiser moments) per `param_mode`; scalars replicated."""
  p = sharding.param_shardings(abstract_state.params, mesh, param_mode)
  by_shape = {}
  for leaf, s in zip(jax.tree.leaves(abstract_state.params), jax.tree.leaves(p), strict=True):
    by_shape.setdefault(tuple(leaf.shape), s)
  rep = sharding.replicated(mesh)
  # Optimiser moments mirror the parameters' shapes: shard them alike (ZeRO-style).
  opt = jax.tree.map(lambda x: by_shape.get(tuple(x.shape), rep), abstract_state.opt_state)
  return TrainState(
    step=rep,
    params=p,
    opt_state=opt,
    rng=rep,
    ema=None if abstract_state.ema is None else p,
    nonfinite=rep,
    skipped=rep,
  )


def _cast_floats(tree, dtype):
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def make_train_step(
  method, tx, shardings: TrainState, mesh, ema_decay: float = 0.0, compute_dtype: str = "float32"
):
  """The jitted step; donates the state.

  compute_dtype "bfloat16" (for TPUs): the loss is computed on bfloat16 copies of the parameters
  and of the batch's float arrays; parameters, gradients and optimiser state stay float32.
  """
  if compute_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.compute_dtype = '{compute_dtype}': expected float32 or bfloat16")
  dtype = jnp.dtype(compute_dtype)

  def loss_fn(params, batch, rng):
    if dtype == jnp.float32:
      return method.loss_fn(params, batch, rng)
    loss, aux = method.loss_fn(_cast_floats(params, dtype), _cast_floats(batch, dtype), rng)
    return loss.astype(jnp.float32), _cast_floats(aux, jnp.float32)

  def step_fn(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Non-finite gradients would poison the optimiser state even if unused: zero them first.
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params = keep(params, state.params)
    opt_state = keep(opt_state, state.opt_state)
    ema = state.ema
    if ema is not None:
      ema = keep(optim.ema_update(ema, params, ema_decay), ema)
    new = TrainState(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      rng=state.rng,
      ema=ema,
      nonfinite=jnp.where(finite, 0, state.nonfinite + 1),
      skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    out = {
      "loss": jnp.where(finite, loss, jnp.nan),
      "grad_norm": grad_norm,
      "nonfinite": new.nonfinite,
      "skipped": new.skipped,
      **aux,
    }
    return new, out

  return jax.jit(
    step_fn,
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def make_eval_stats(method, mesh):
  """The jitted per-batch statistics (built once per run: one compilation)."""
  return jax.jit(method.eval_stats, out_shardings=sharding.replicated(mesh))


def evaluate(stats_fn, params, eval_batches: Callable[[], Iterator[dict]], mesh) -> dict:
  """Exact dataset metrics: Stats summed over batches (padding masked) and hosts."""
  total = None
  for local in eval_batches():
    s = stats_fn(params, sharding.global_batch(local, mesh))
    total = s if total is None else total + s
  if total is None:
    return {}
  return eval_metrics.finalize(jax.device_get(total))


class _Preemption:
  """Turns SIGTERM into a flag checked between steps (restores the old handler on exit)."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _restore(config, ckpt, abstract, fresh: TrainState):
  """Resume order: workdir checkpoint -> config.resume (whole state) -> config.init_from
  (parameters only: step, optimiser state and RNG start afresh) -> None (from scratch)."""
  found = ckpt.restore_latest(abstract)
  if found is not None:
    return found
  for key in ("resume", "init_from"):
    path = config.get(key, "")
    if not path:
      continue
    other = checkpoint.Checkpointer(path)
    if other.latest_step() is None:
      raise checkpoint.CheckpointError(f"config.{key} = {path}: no checkpoint there")
    step, state, meta = other.restore_latest(abstract)
    if key == "resume":
      return step, state, meta
    params = state.params
    ema = None if fresh.ema is None else params
    return 0, dataclasses.replace(fresh, params=params, ema=ema), {}
  return None


def train_and_evaluate(config, workdir, method, train_batches, eval_batches=None):
  """Trains `method` for config.num_steps; returns the final TrainState."""
  workdir = epath.Path(workdir)
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  tx = optim.make_optimizer(config.optim, config.num_steps)
  ema_decay = float(config.optim.get("ema_decay", 0.0))
  ckpt_cfg = config.get("checkpoint", {})
  ckpt = checkpoint.Checkpointer(
    workdir / "checkpoints",
    max_to_keep=int(ckpt_cfg.get("keep", 3)),
    save_interval_steps=int(ckpt_cfg.get("every", 1000)),
  )
  rng = jax.random.key(int(config.seed))
  probe = sharding.global_batch(next(iter(train_batches(0))), mesh)
  state, shardings = create_train_state(
    method, tx, rng, probe, mesh, config.get("param_sharding", "replicated"), ema_decay > 0
  )
  restored = _restore(config, ckpt, checkpoint.abstract_like(state, shardings), state)
  start = 0
  if restored is not None:
    start, state, _ = restored
  step_fn = make_train_step(
    method, tx, shardings, mesh, ema_decay, config.get("compute_dtype", "float32")
  )
  profile = config.get("profile", {}) or {}
  profile_start, profile_steps = int(profile.get("start", -1)), int(profile.get("steps", 0))
  writer = writers.MetricWriter(workdir, tensorboard=bool(config.get("tensorboard", True)))
  progress = writers.Progress(config.num_steps, start)
  log_every = int(config.get("log_every", 50))
  eval_every = int(config.get("eval_every", 0))
  max_nonfinite = int(config.get("max_nonfinite", 10))
  batches = train_batches(start)

  def save(step, **meta):
    if ckpt.latest_step() != step:
      ckpt.save(step, state, {"data_position": step, **meta}, force=True)

  stats_fn = make_eval_stats(method, mesh)

  def log_eval(step):
    results = evaluate(stats_fn, state.params, eval_batches, mesh)
    writer.write(step, {f"eval/{k}": v for k, v in results.items()})

  prev, out = None, None
  with _Preemption() as preempt:
    for step in range(start, config.num_steps):
      local = next(batches)
      if profile_steps and step == profile_start:
        jax.profiler.start_trace(str(workdir / "profile"))
      t0 = time.perf_counter()
      state, out = step_fn(state, sharding.global_batch(local, mesh))
      if profile_steps and step == profile_start + profile_steps - 1:
        jax.block_until_ready(state.step)
        jax.profiler.stop_trace()
      if step == start:
        jax.block_until_ready(state.step)
        progress.compiled(time.perf_counter() - t0)
      # The previous step's counters: reading them does not wait for the step just dispatched.
      _check_nonfinite(prev, max_nonfinite, step)
      # Show the previous step's loss: reading the current one would wait for it every step.
      shown = f"loss {float(prev['loss']):.4g}" if progress.tty and prev is not None else ""
      prev = out
      done = step + 1
      if done % log_every == 0 or done == config.num_steps:
        writer.write(done, {**out, "steps_per_s": progress.rate(done)})
      progress.tick(done, shown)
      if eval_every and eval_batches is not None and done % eval_every == 0:
        log_eval(done)
      if preempt.requested:
        save(done, preempted=True)
        ckpt.wait()
        writer.close()
        return state
      ckpt.save(done, state, {"data_position": done})
  _check_nonfinite(out, max_nonfinite, config.num_steps)
  save(config.num_steps)
  ckpt.wait()
  if eval_batches is not None and not (eval_every and config.num_steps % eval_every == 0):
    log_eval(config.num_steps)  # unless the periodic evaluation just ran
  writer.close()
  ckpt.close()
  return state


def _check_nonfinite(out, max_nonfinite, step):
  if out is not None and int(out["nonfinite"]) >= max_nonfinite:
    raise NonFiniteError(
      f"{int(out['nonfinite'])} non-finite losses or gradients in a row (by step {step}); "
      f"{int(out['skipped'])} skipped in total: lower the learning rate or check the data"
    )


def params_to_numpy(state: TrainState):
  return jax.tree.map(np.asarray, jax.device_get(state.params))
