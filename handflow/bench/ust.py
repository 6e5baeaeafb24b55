"""UST-Hand's cost: the train step, the flow stage at K = 1, 16, 64 hypotheses, and where the
context term of the flow's conditioner is computed.

  python -m handflow.bench.ust [--config=configs/ust.py] [--steps=10]

1. The train step of the config (default: the CPU default) on one in-memory batch: seconds,
   clips/s, images/s, GFLOP/s (XLA's cost analysis) and the fraction of the measured GEMM peak.
2. The flow's sampling alone on the config's batch of joints (b t v x 21): joint features h ->
   K hypotheses, their log-densities and the mode. "context once" is handflow's form (the
   conditioner's context term computed once per joint, outside the vmap over keys); "context in
   layer 1" is the textbook conditioner tanh([x, h] W + b), whose context product the vmap
   repeats for every sample (the two give the same samples; checked).
3. Stage 1 (backbone, heads and the K hypotheses: the flow stage; target K = 64 < 3x K = 1)
   and the whole UST forward pass at each K.
Writes bench_results/ust.json.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app

from handflow import sharding
from handflow.bench import common, train_step
from handflow.data import pipeline, prepare
from handflow.methods.ust import UST
from handflow.models import flow

# --config, --steps and --out are train_step's flags (one definition per process).
_CONFIG, _STEPS, _OUT = train_step.CONFIG, train_step.STEPS, train_step.OUT
KS = (1, 16, 64)


def _train_step_rows(config, method, batch, mesh):
  _, _, compile_s, step_s, flops = train_step.measure(config, method, batch, mesh, _STEPS.value)
  peak = common.matmul_peak_gflops()
  b = config.batch_size
  images = b * config.data.frames * config.data.views
  return [
    dict(what="train step: compile", seconds=compile_s),
    dict(
      what=f"train step: K = {method.k}",
      seconds=step_s,
      clips_s=b / step_s,
      images_s=images / step_s,
      gflops=flops / step_s / 1e9,
      of_peak=flops / step_s / 1e9 / peak,
    ),
  ], peak


def _concat_distribution(net_params, h, layers):
  """The same flow with the textbook conditioner tanh([x_masked, h] W + b): the context enters
  the first layer with x, so sampling under vmap multiplies it for every sample."""
  p = net_params["params"]
  hidden = p["w_in"].shape[-1]
  ctx_w = p["context"]["kernel"].reshape(-1, layers, hidden)
  ctx_b = p["context"]["bias"].reshape(layers, hidden)
  couplings = []
  for i in range(layers):
    w = jnp.concatenate([p["w_in"][i], ctx_w[:, i]], axis=0)  # [2 + C, hidden]

    def conditioner(xm, w=w, i=i):
      hid = jnp.tanh(jnp.concatenate([xm, h], -1) @ w + ctx_b[i])
      out = hid @ p["w_out"][i] + p["b_out"][i]
      bound = flow.LOG_SCALE_BOUND
      return out[..., :2], bound * jnp.tanh(out[..., 2:] / bound)

    couplings.append(
      flow.distrax.MaskedCoupling(
        mask=jnp.array([i % 2 == 0, i % 2 == 1]),
        conditioner=conditioner,
        bijector=lambda q: flow.distrax.ScalarAffine(shift=q[0], log_scale=q[1]),
        event_ndims=1,
      )
    )
  base = flow.distrax.MultivariateNormalDiag(jnp.zeros(h.shape[:-1] + (2,)), jnp.ones(2))
  return flow.distrax.Transformed(base, flow.distrax.Chain(couplings[::-1]))


def _flow_rows(method, params, batch):
  """The flow's sampling alone (joint features -> K hypotheses, log-densities and the mode),
  with the context term once per joint (handflow) or inside the first layer (textbook)."""
  img = batch["images"]
  s1 = jax.jit(method.stage1.apply)(params["stage1"], img.reshape((-1,) + img.shape[-3:]))
  h = s1["h"]
  layers = method.stage1.flow_layers
  net_params = {"params": params["stage1"]["params"]["ConditionalFlow_0"]}
  net = flow.ConditionalFlow(layers, method.stage1.flow_hidden)
  key = jax.random.key(0)

  def make(k, concat):
    def fn(p, h):
      dist = _concat_distribution(p, h, layers) if concat else flow.distribution(*net.apply(p, h))
      x, lp = flow.sample(dist, key, k)
      return x, lp, flow.mode(dist)[0]

    return jax.jit(fn)

  fns = {(kind, k): make(k, kind == "concat") for k in KS for kind in ("once", "concat")}
  outs = {name: jax.block_until_ready(f(net_params, h)) for name, f in fns.items()}
  for k in KS:  # the two forms are the same function
    assert jnp.allclose(outs[("once", k)][0], outs[("concat", k)][0], atol=1e-4)
  times = common.time_interleaved(
    {name: (lambda f=f: jax.block_until_ready(f(net_params, h))) for name, f in fns.items()}
  )
  joints = h.shape[0] * h.shape[1]
  rows = []
  for k in KS:
    for kind, label in (("once", "context once"), ("concat", "context in layer 1")):
      t = times[(kind, k)]
      row = dict(
        what=f"flow sampling: K = {k}, {label}",
        seconds=t,
        hyp_s=joints * k / t,
        vs_k1=t / times[(kind, 1)],
      )
      if kind == "once":
        row["speedup"] = times[("concat", k)] / t
      rows.append(row)
  return rows, joints


def _k_rows(config, batch):
  """Stage 1 (backbone, heads, K hypotheses) and the whole forward pass at each K."""
  fns = {}
  for k in KS:
    c = config.copy_and_resolve_references()
    c.model.num_hypotheses = k
    m = UST(c)
    p, _ = m.init(jax.random.key(0), batch)
    s1 = jax.jit(lambda p, b, m=m, k=k: m.hypotheses(p, b, jax.random.key(1), k)["hyp"])
    fw = jax.jit(lambda p, b, m=m: m.forward(p, b, jax.random.key(1)).joints)
    for name, f in (("stage1", s1), ("forward", fw)):
      jax.block_until_ready(f(p, batch))
      fns[(name, k)] = lambda f=f, p=p: jax.block_until_ready(f(p, batch))
  times = common.time_interleaved(fns, rounds=3, reps=2)
  rows = []
  for name, label in (("stage1", "stage 1 (backbone + flow)"), ("forward", "UST forward")):
    for k in KS:
      t = times[(name, k)]
      rows.append(dict(what=f"{label}: K = {k}", seconds=t, vs_k1=t / times[(name, KS[0])]))
  return rows


def main(argv):
  del argv
  config = _CONFIG.value
  prepare.prepare(config)
  mesh = sharding.make_mesh(dict(config.get("mesh", {"data": -1})))
  method = UST(config)
  batch = sharding.global_batch(next(pipeline.batches(config, "train", train=True)), mesh)
  rows, peak = _train_step_rows(config, method, batch, mesh)
  params, _ = jax.jit(method.init)(jax.random.key(0), batch)
  flow_rows, joints = _flow_rows(method, params, batch)
  rows += flow_rows + _k_rows(config, batch)
  b = config.batch_size
  print(
    f"UST-Hand: ResNet-{config.model.backbone_depth} (width {config.model.backbone_width}), "
    f"batch {b} clips x {config.data.frames} frames x {config.data.views} views of "
    f"{pipeline.crop_size(config)} px = {joints} joints; GEMM peak {peak:.0f} GFLOP/s; "
    f"{common.machine()}\n"
  )
  common.print_table(
    rows,
    [
      ("what", "", "{}"),
      ("seconds", "s", "{:.4f}"),
      ("clips_s", "clips/s", "{:.2f}"),
      ("images_s", "images/s", "{:.0f}"),
      ("gflops", "GFLOP/s", "{:.1f}"),
      ("of_peak", "of peak", "{:.0%}"),
      ("hyp_s", "hypotheses/s", "{:,.0f}"),
      ("vs_k1", "x K=1", "{:.2f}"),
      ("speedup", "x naive", "{:.1f}"),
    ],
  )
  ratio = lambda what: next(r for r in rows if r["what"] == what)["vs_k1"]
  print(
    f"\nK = 64 / K = 1: stage 1 {ratio('stage 1 (backbone + flow): K = 64'):.2f} (target < 3); "
    f"flow sampling alone {ratio('flow sampling: K = 64, context once'):.2f}"
  )
  path = common.write_json("ust", {"machine": common.machine(), "rows": rows}, _OUT.value)
  print(f"wrote {path}")


if __name__ == "__main__":
  jnp.zeros(())  # initialise the backend before flags are parsed (fake devices, if any)
  app.run(main)
