"""A tiny stand-in method and data for the training-loop tests; also runs as a script:

  python -m tests.train_helper WORKDIR NUM_STEPS [SLEEP_S]

which trains it (8 fake CPU devices) and writes WORKDIR/final.npz.
"""

import itertools
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from handflow.eval import metrics

W_TRUE = np.array([[1.5], [-2.0], [0.5], [3.0]], np.float32)


class LinearMethod:
  name = "linear"

  def init_params(self, rng, batch):
    d = batch["x"].shape[-1]
    return {"w": 0.1 * jax.random.normal(rng, (d, 1)), "b": jnp.zeros((1,))}

  def loss_fn(self, params, batch, rng):
    pred = (batch["x"] @ params["w"])[:, 0] + params["b"][0]
    # A little RNG-dependent noise, so that resuming must restore the RNG stream exactly.
    noise = 1e-3 * jax.random.normal(rng, pred.shape)
    err = ((pred + noise - batch["y"]) ** 2) * batch["mask"]
    loss = jnp.sum(err) / jnp.maximum(jnp.sum(batch["mask"]), 1.0)
    return loss, {"mse": loss}

  def eval_stats(self, params, batch):
    pred = (batch["x"] @ params["w"])[:, 0] + params["b"][0]
    return metrics.batch_stats(
      {"abs_err": jnp.abs(pred - batch["y"])[:, None]}, sample_mask=batch["mask"]
    )


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
  state = train.train_and_evaluate(
    config(steps), workdir, LinearMethod(), lambda s: batches(s, sleep_s=sleep_s)
  )
  np.savez(f"{workdir}/final.npz", **train.params_to_numpy(state))
