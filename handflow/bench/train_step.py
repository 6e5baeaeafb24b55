"""Train-step cost: compile time, step time, examples/s, FLOP/s against the GEMM peak, and the
same with the input pipeline attached (is the step input-bound?).

  python -m handflow.bench.train_step --config=configs/ust.py [--steps=20]

The workload is the config's method (configs/ust.py: UST-Hand; configs/keypoints2d.py: the 2D
baseline) on the embedded synthetic_hands data (prepared first if needed). Writes
bench_results/train_step.json.
"""

from __future__ import annotations

import time

import jax
from absl import app, flags
from ml_collections import config_flags

from handflow import optim, sharding, train
from handflow.bench import common
from handflow.data import pipeline, prepare
from handflow.methods import registry

CONFIG = config_flags.DEFINE_config_file("config", "configs/ust.py", "Experiment config.")
STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
OUT = flags.DEFINE_string("out", None, "JSON output path.")


def measure(config, method, batch, mesh, steps: int):
  """The jitted train step of `method` on one in-memory batch: (step, state, compile seconds,
  best step seconds over `steps`, FLOPs per step from XLA's cost analysis)."""
  abstract, _ = train.abstract_init(method, jax.random.key(0), batch)
  steps_cfg = max(config.num_steps, config.optim.warmup_steps + 1)
  labels = method.param_labels(abstract)
  tx = optim.make_optimizer(config.optim, steps_cfg, abstract, labels)
  state, shards = train.create_train_state(
    method, tx, jax.random.key(0), batch, mesh, config.param_sharding, False
  )
  step = train.make_train_step(method, tx, shards, mesh, 0.0, config.compute_dtype)
  t0 = time.perf_counter()
  state, out = step(state, batch)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0  # the first call compiles (cost analysis would, too)
  flops = common.jax_flops(step, state, batch)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, out = step(state, batch)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return step, state, compile_s, min(times), flops


def main(argv):
  del argv
  config = CONFIG.value
  prepare.prepare(config)
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  method = registry.make(config)
  it = pipeline.batches(config, "train", train=True)
  batch = sharding.global_batch(next(it), mesh)
  step, state, compile_s, step_s, flops = measure(config, method, batch, mesh, STEPS.value)
  t0 = time.perf_counter()
  for _ in range(STEPS.value):
    state, out = step(state, sharding.global_batch(next(it), mesh))
  jax.block_until_ready(out)
  fed_s = (time.perf_counter() - t0) / STEPS.value
  peak = common.matmul_peak_gflops()
  b = config.batch_size
  images = b * config.data.frames * config.data.views
  rows = [
    dict(what="compile", seconds=compile_s),
    dict(
      what="step (in-memory batch)",
      seconds=step_s,
      clips_s=b / step_s,
      images_s=images / step_s,
      gflops=flops / step_s / 1e9,
      of_peak=flops / step_s / 1e9 / peak,
    ),
    dict(what="step + input pipeline", seconds=fed_s, clips_s=b / fed_s, images_s=images / fed_s),
  ]
  print(
    f"method {method.name} ({dict(config.model)}), batch {b} clips = {images} "
    f"images of {pipeline.crop_size(config)} px; GEMM peak {peak:.0f} GFLOP/s; {common.machine()}\n"
  )
  common.print_table(
    rows,
    [
      ("what", "", "{}"),
      ("seconds", "s", "{:.4f}"),
      ("clips_s", "clips/s", "{:.1f}"),
      ("images_s", "images/s", "{:.0f}"),
      ("gflops", "GFLOP/s", "{:.1f}"),
      ("of_peak", "of peak", "{:.0%}"),
    ],
  )
  bound = "yes" if fed_s > 1.2 * step_s else "no"
  print(f"\ninput-bound: {bound} (fed / in-memory step time = {fed_s / step_s:.2f})")
  path = common.write_json(
    "train_step", {"machine": common.machine(), "rows": rows, "flops_per_step": flops}, OUT.value
  )
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
