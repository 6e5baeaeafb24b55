"""The method-agnostic training loop.

  state = train_and_evaluate(config, workdir, method, train_batches, evaluate=None)

`method` implements `handflow.methods.base.Method`; the loop never imports a method.
`train_batches(start_step)` returns an iterator of per-host NumPy batches beginning at global
step `start_step` (the data position restored from a checkpoint); `evaluate(params, extra)`
returns a dict of metrics (the entry, `handflow.modes`, runs the config's evaluators on the
validation split) or is None. Training-time evaluation never sees the test split.

Resume order: a checkpoint in `workdir/checkpoints` -> `config.resume` (a checkpoint directory:
the whole state) -> `config.init_from.workdir` (a run or checkpoint directory: its saved
parameters, loaded into this method's tree by `method.load_pretrained`, see
`handflow.finetune`; step, optimiser, extra state and RNG start afresh) -> from scratch. A
checkpoint that cannot be read stops the run with its path; the run never silently starts over.

One step is one jitted, pure `(state, batch) -> (state, metrics)` with the state donated and
sharded on a mesh (`config.mesh`, default all devices on "data"); the RNG is folded with the
step. The step computes `method.loss_fn(params, extra, batch, rng, step)`, applies the update,
then `method.update_extra(extra, new_params, aux, step)`. A non-finite loss or gradient skips
the whole update (parameters, optimiser, extra and EMA keep their values; the batch is
consumed), is counted and logged, and the run stops with a message after `config.max_nonfinite`
in a row. SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint at the end of the current
step and raise `interrupts.Preempted` (the entry exits with 128 + the signal's number, naming
the step and how to resume; no report is written for a part-trained model).
`config.compute_dtype = "bfloat16"` computes the loss in bfloat16 (TPU); `config.profile =
{"start": s, "steps": n}` writes a profiler trace of steps s .. s+n-1 to `workdir/profile`.

Shardings: parameters per `config.param_sharding` (`sharding.param_shardings`); the optimiser
state's parameter-shaped parts take their parameter's sharding (`optax.tree_map_params` over
the optimiser's own structure), its counters are replicated; the extra state follows the same
per-leaf rule as the parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from handflow import checkpoint, finetune, interrupts, optim, sharding, writers


class NonFiniteError(RuntimeError):
  """Too many non-finite losses or gradients in a row."""


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["step", "params", "opt_state", "extra", "rng", "ema", "nonfinite", "skipped"],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class TrainState:
  step: jax.Array  # [] int32: updates attempted (= batches consumed)
  params: object
  opt_state: object
  extra: object  # the method's untrained state (EMA teacher, centers, ...), {} when none
  rng: jax.Array  # [2] uint32 key data (checkpointable)
  ema: object  # the loop's EMA of params (config.optim.ema_decay), or None
  nonfinite: jax.Array  # [] int32: non-finite steps in a row
  skipped: jax.Array  # [] int32: non-finite steps in total

  @property
  def eval_params(self):
    """What evaluation, prediction and export use: the EMA when the run keeps one."""
    return self.params if self.ema is None else self.ema

  def export(self):
    """The checkpoint's `params` item."""
    out = {"params": self.eval_params}
    if jax.tree.leaves(self.extra):
      out["extra"] = self.extra
    return out


def abstract_init(method, rng, batch):
  """(params, extra) of `method` as ShapeDtypeStructs: no compute, no memory."""
  return jax.eval_shape(method.init, rng, batch)


def make_optimizer(config, method, abstract_params):
  """The optimiser with the config's parameter groups over the method's labels."""
  labels = method.param_labels(abstract_params)
  return optim.make_optimizer(config.optim, config.num_steps, abstract_params, labels)


def create_train_state(method, tx, rng, batch, mesh, param_mode: str, ema: bool):
  """The initial state, created already sharded (jitted init with out_shardings)."""

  def init(rng):
    params, extra = method.init(rng, batch)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      extra=extra,
      rng=jax.random.key_data(jax.random.fold_in(rng, 1)),
      ema=params if ema else None,
      nonfinite=jnp.zeros((), jnp.int32),
      skipped=jnp.zeros((), jnp.int32),
    )

  abstract = jax.eval_shape(init, rng)
  shardings = state_shardings(abstract, tx, mesh, param_mode)
  return jax.jit(init, out_shardings=shardings)(rng), shardings


def state_shardings(abstract_state: TrainState, tx, mesh, param_mode: str):
  """Parameters (and their EMA) per `param_mode`; the optimiser's parameter-shaped parts as
  their parameters (ZeRO-style under fsdp); the extra state by the same per-leaf rule;
  counters replicated."""
  p = sharding.param_shardings(abstract_state.params, mesh, param_mode)
  rep = sharding.replicated(mesh)
  opt = optax.tree_map_params(
    tx,
    lambda _, s: s,
    abstract_state.opt_state,
    p,
    transform_non_params=lambda _: rep,
    is_leaf=lambda x: isinstance(x, optax.MaskedNode),
  )
  # multi_transform's inner states hold an empty MaskedNode for each leaf outside their group:
  # the shardings tree keeps it, so that both trees have one structure.
  opt = jax.tree.map(
    lambda s, x: x if isinstance(x, optax.MaskedNode) else s,
    opt,
    abstract_state.opt_state,
    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding | optax.MaskedNode),
  )
  return TrainState(
    step=rep,
    params=p,
    opt_state=opt,
    extra=sharding.param_shardings(abstract_state.extra, mesh, param_mode),
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

  compute_dtype "bfloat16" (for TPUs): the loss is computed on bfloat16 copies of the parameters,
  the extra state and the batch as `method.compute_inputs` casts it (default: every float array;
  UST-Hand: the images only, so cameras and labels stay float32), and a method returns its
  networks' outputs to float32 before geometry, densities, the hand model and its losses (eigh
  and SVD must not run in bfloat16). Parameters, gradients and
  optimiser state stay float32.
  """
  if compute_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.compute_dtype = '{compute_dtype}': expected float32 or bfloat16")
  dtype = jnp.dtype(compute_dtype)

  def loss_fn(params, extra, batch, rng, step):
    if dtype == jnp.float32:
      return method.loss_fn(params, extra, batch, rng, step)
    cast = lambda t: _cast_floats(t, dtype)
    inputs = getattr(method, "compute_inputs", None)  # the method says what it casts
    batch = inputs(batch, dtype) if inputs is not None else cast(batch)
    loss, aux = method.loss_fn(cast(params), cast(extra), batch, rng, step)
    return loss.astype(jnp.float32), _cast_floats(aux, jnp.float32)

  def step_fn(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, aux)), grads = grad_fn(state.params, state.extra, batch, rng, state.step)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Non-finite gradients would poison the optimiser state even if unused: zero them first.
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params = keep(params, state.params)
    opt_state = keep(opt_state, state.opt_state)
    extra = keep(method.update_extra(state.extra, params, aux, state.step), state.extra)
    ema = state.ema
    if ema is not None:
      ema = keep(optim.ema_update(ema, params, ema_decay), ema)
    new = TrainState(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      extra=extra,
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
      **metrics,
    }
    return new, out

  return jax.jit(
    step_fn,
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def _restore(config, method, ckpt, abstract, fresh: TrainState, shardings: TrainState):
  """Resume order: workdir checkpoint -> config.resume (whole state) -> config.init_from
  (parameters into this model; everything else starts afresh) -> None (from scratch)."""
  found = ckpt.restore_latest(abstract)
  if found is not None:
    return found
  path = config.get("resume", "")
  if path:
    other = checkpoint.Checkpointer(finetune.checkpoint_dir(path))
    if other.latest_step() is None:
      raise checkpoint.CheckpointError(f"config.resume = {path}: no checkpoint there")
    return other.restore_latest(abstract)
  if finetune.init_from_config(config):
    params, report = finetune.load_pretrained(config, method, fresh.params)
    if jax.process_index() == 0:
      print(f"handflow: {report.line()}", flush=True)
    params = jax.device_put(params, shardings.params)
    ema = None if fresh.ema is None else params
    return 0, dataclasses.replace(fresh, params=params, ema=ema), {}
  return None


def train_and_evaluate(config, workdir, method, train_batches, evaluate: Callable | None = None):
  """Trains `method` for config.num_steps; returns the final TrainState."""
  workdir = epath.Path(workdir)
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  ema_decay = float(config.optim.get("ema_decay", 0.0))
  ckpt_cfg = config.get("checkpoint", {})
  ckpt = checkpoint.Checkpointer(
    workdir / "checkpoints",
    max_to_keep=int(ckpt_cfg.get("keep", 3)),
    save_interval_steps=int(ckpt_cfg.get("every", 1000)),
  )
  rng = jax.random.key(int(config.seed))
  probe = sharding.global_batch(next(iter(train_batches(0))), mesh)
  abstract_params, _ = abstract_init(method, rng, probe)
  tx = make_optimizer(config, method, abstract_params)
  groups = optim.describe(config.optim, abstract_params, method.param_labels(abstract_params))
  if groups and jax.process_index() == 0:
    print(f"handflow: {groups}", flush=True)
  state, shardings = create_train_state(
    method, tx, rng, probe, mesh, config.get("param_sharding", "replicated"), ema_decay > 0
  )
  restored = _restore(
    config, method, ckpt, checkpoint.abstract_like(state, shardings), state, shardings
  )
  start = 0
  if restored is not None:
    start, state, _ = restored
  step_fn = make_train_step(
    method, tx, shardings, mesh, ema_decay, config.get("compute_dtype", "float32")
  )
  profile = config.get("profile", {}) or {}
  profile_start, profile_steps = int(profile.get("start", -1)), int(profile.get("steps", 0))
  writer = writers.MetricWriter(
    workdir, tensorboard=bool(config.get("tensorboard", True)), start_step=start
  )
  progress = writers.Progress(config.num_steps, start)
  log_every = int(config.get("log_every", 50))
  eval_every = int(config.get("eval_every", 0))
  max_nonfinite = int(config.get("max_nonfinite", 10))
  batches = train_batches(start)

  def save(step, **meta):
    if ckpt.latest_step() != step:
      ckpt.save(step, state, state.export(), {"data_position": step, **meta}, force=True)

  def log_eval(step):
    results = evaluate(state.eval_params, state.extra)
    writer.write(step, {f"eval/{k}": v for k, v in results.items()})
    progress.line(f"validation at step {step}: {writers.headline(results)}")

  prev, out = None, None
  with interrupts.StopFlag() as stop:
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
      if eval_every and evaluate is not None and done % eval_every == 0:
        log_eval(done)
      if stop.requested:
        save(done, preempted=True, signal=stop.requested)
        ckpt.wait()
        writer.close()
        ckpt.close()
        raise interrupts.Preempted(done, config.num_steps, stop.requested, ckpt.directory)
      ckpt.save(done, state, state.export(), {"data_position": done})
  _check_nonfinite(out, max_nonfinite, config.num_steps)
  save(config.num_steps)
  ckpt.wait()
  if evaluate is not None and not (eval_every and config.num_steps % eval_every == 0):
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


def restore_for_inference(config, method, workdir, batch, mesh):
  """(params, extra) of the newest checkpoint in `workdir`, read from its `params` item (no
  optimiser is built), onto the config's parameter shardings."""
  ckpt = checkpoint.Checkpointer(epath.Path(workdir) / "checkpoints")
  step = ckpt.latest_step()
  if step is None:
    raise checkpoint.CheckpointError(
      f"no checkpoint in {epath.Path(workdir) / 'checkpoints'}: train first (--mode=train)"
    )
  params, extra = abstract_init(method, jax.random.key(int(config.seed)), batch)
  mode = config.get("param_sharding", "replicated")
  target = {"params": params, **({"extra": extra} if jax.tree.leaves(extra) else {})}
  abstract = checkpoint.abstract_like(target, sharding.param_shardings(target, mesh, mode))
  out = ckpt.restore_params(step, abstract)
  return out["params"], out.get("extra", extra)
