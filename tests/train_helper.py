"""A tiny stand-in method and data for the training-loop tests; also runs as a script:

  python -m tests.train_helper WORKDIR NUM_STEPS [SLEEP_S [teacher]]

which trains it (8 fake CPU devices; `teacher`: the stand-in with an EMA teacher) and writes
WORKDIR/final.npz.
"""

import itertools
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from handflow import interrupts, optim
from handflow.eval import metrics
from handflow.methods.base import MethodBase

W_TRUE = np.array([[1.5], [-2.0], [0.5], [3.0]], np.float32)


class LinearMethod(MethodBase):
  """y = x w + b, trained on the mean squared error."""

  name = "linear"

  def init(self, rng, batch):
    d = batch["x"].shape[-1]
    return {"w": 0.1 * jax.random.normal(rng, (d, 1)), "b": jnp.zeros((1,))}, {}

  def _mse(self, params, batch, rng):
    pred = (batch["x"] @ params["w"])[:, 0] + params["b"][0]
    # A little RNG-dependent noise, so that resuming must restore the RNG stream exactly.
    noise = 1e-3 * jax.random.normal(rng, pred.shape)
    err = ((pred + noise - batch["y"]) ** 2) * batch["mask"]
    return jnp.sum(err) / jnp.maximum(jnp.sum(batch["mask"]), 1.0), pred

  def loss_fn(self, params, extra, batch, rng, step):
    del extra, step
    loss, _ = self._mse(params, batch, rng)
    return loss, ({"mse": loss}, None)

  def predict(self, params, extra, batch):
    del extra
    return {"y": (batch["x"] @ params["w"])[:, 0] + params["b"][0]}


class TeacherMethod(LinearMethod):
  """The linear student plus an EMA teacher inside its objective, HandMIM-style: the teacher's
  momentum follows a cosine schedule from `m0` to 1, the student is also pulled towards the
  teacher's centred predictions, and the centre is a running mean of the teacher's outputs (an
  untrained statistic fed by the loss's aux)."""

  name = "linear_teacher"
  m0, weight = 0.9, 0.5

  def __init__(self, num_steps: int = 40):
    self.num_steps = num_steps

  def init(self, rng, batch):
    params, _ = super().init(rng, batch)
    return params, {"teacher": params, "center": jnp.zeros(())}

  def momentum(self, step):
    frac = jnp.clip(step / self.num_steps, 0.0, 1.0)
    return 1.0 - (1.0 - self.m0) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0

  def loss_fn(self, params, extra, batch, rng, step):
    mse, pred = self._mse(params, batch, rng)
    t = jax.lax.stop_gradient(self.predict(extra["teacher"], {}, batch)["y"])
    m = batch["mask"]
    distill = jnp.sum(((pred - (t - extra["center"])) ** 2) * m) / jnp.maximum(jnp.sum(m), 1.0)
    loss = mse + self.weight * distill
    aux = {"teacher_mean": jnp.sum(t * m) / jnp.maximum(jnp.sum(m), 1.0)}
    return loss, ({"mse": mse, "distill": distill, "momentum": self.momentum(step)}, aux)

  def update_extra(self, extra, params, aux, step):
    teacher = optim.ema_update(extra["teacher"], params, self.momentum(step))
    center = 0.9 * extra["center"] + 0.1 * aux["teacher_mean"]
    return {"teacher": teacher, "center": center}


def evaluate(method):
  """An `evaluate(params, extra)` for the loop: the exact mean |error| on the eval batches."""
  stats = jax.jit(
    lambda p, e, b: metrics.batch_stats(
      {"abs_err": jnp.abs(method.predict(p, e, b)["y"] - b["y"])[:, None]},
      sample_mask=b["mask"],
    )
  )

  def run(params, extra):
    total = None
    for b in eval_batches()():
      s = stats(params, extra, b)
      total = s if total is None else total + s
    return metrics.finalize(jax.device_get(total))

  return run


def batches(start, batch=16, nan_steps=(), sleep_s=0.0):
  for step in itertools.count(start):
    rng = np.random.default_rng([7, step])
    x = rng.normal(size=(batch, 4)).astype(np.float32)
    y = (x @ W_TRUE)[:, 0] + 0.01 * rng.normal(size=batch).astype(np.float32)
    if step in nan_steps:
      x[0, 0] = np.nan
    if sleep_s:
      time.sleep(sleep_s)
    yield {"x": x, "y": y.astype(np.float32), "mask": np.ones(batch, np.float32)}


def eval_batches(n=40, batch=16):
  def gen():
    rng = np.random.default_rng(99)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ W_TRUE)[:, 0]
    for i in range(0, n, batch):
      xb, yb = x[i : i + batch], y[i : i + batch]
      pad = batch - len(xb)
      mask = np.concatenate([np.ones(len(xb)), np.zeros(pad)]).astype(np.float32)
      yield {"x": np.pad(xb, ((0, pad), (0, 0))), "y": np.pad(yb, (0, pad)), "mask": mask}

  return gen


def config(num_steps=40, **kw):
  c = ml_collections.ConfigDict(
    {
      "seed": 0,
      "num_steps": num_steps,
      "mesh": {"data": -1},
      "param_sharding": "replicated",
      "log_every": 5,
      "eval_every": 0,
      "max_nonfinite": 3,
      "tensorboard": False,
      "checkpoint": {"every": 2, "keep": 3},
      "optim": {
        "name": "adamw",
        "learning_rate": 0.05,
        "weight_decay": 0.0,
        "schedule": "cosine",
        "warmup_steps": 2,
        "end_factor": 0.1,
        "grad_clip": 10.0,
        "ema_decay": 0.0,
      },
    }
  )
  c.update(kw)
  return c


if __name__ == "__main__":
  from handflow import train

  workdir, steps = sys.argv[1], int(sys.argv[2])
  sleep_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
  teacher = len(sys.argv) > 4 and sys.argv[4] == "teacher"
  method = TeacherMethod(steps) if teacher else LinearMethod()
  try:
    state = train.train_and_evaluate(
      config(steps), workdir, method, lambda s: batches(s, sleep_s=sleep_s)
    )
  except interrupts.Preempted as e:  # as handflow.main reports it
    print(f"stopped by {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  out = {f"params/{k}": v for k, v in train.params_to_numpy(state).items()}
  if teacher:
    extra = jax.device_get(state.extra)
    out.update({f"teacher/{k}": np.asarray(v) for k, v in extra["teacher"].items()})
    out["center"] = np.asarray(extra["center"])
  np.savez(f"{workdir}/final.npz", **out)
