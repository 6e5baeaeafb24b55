"""HandMIM's steps and its ViT against the same ViT in PyTorch.

  python -m handflow.bench.handmim [--config=configs/handmim.py] [--vit=S/16] [--size=224]
      [--batch=8] [--out=DIR]

Rows (best of repeated compiled calls, in-memory batches of the config's shape):
- pretrain step / finetune step: loss + gradient + optimiser update (+ the teacher's EMA and
  centering for pre-training), images per second, and the share of this machine's measured
  float32 GEMM peak that XLA's FLOP count reaches (utilisation);
- ViT forward+backward at `--vit`, `--size`, `--batch`: handflow's (jitted) and a PyTorch
  implementation of the same model (pre-norm blocks, fused QKV, GELU MLP, learnable [CLS] and
  position embeddings; same width, depth, heads, batch) timed in alternating rounds in this run;
  the ratio is PyTorch's time over handflow's (> 1: handflow faster). PyTorch comes from the
  `bench` extra; without it the row says so.
The masked student processes every token (a mask token replaces masked patches, as in iBOT), so
there is no dropped-token saving to measure. Writes bench_results/handmim.json.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from handflow import stages
from handflow.bench import common
from handflow.methods import registry
from handflow.models import vit

_CONFIG = config_flags.DEFINE_config_file("config", "configs/handmim.py", "HandMIM config.")
_VIT = flags.DEFINE_string("vit", "S/16", "ViT variant of the PyTorch comparison.")
_SIZE = flags.DEFINE_integer("size", 224, "Image size of the PyTorch comparison.")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch of the PyTorch comparison.")
_OUT = flags.DEFINE_string("out", None, "JSON path (default bench_results/handmim.json).")


def _batch(config, n):
  """n random images with a plausible hand and its keypoints (no mesh: no vertex term)."""
  from handflow.hand import loader

  size = config.data.crop_size or config.data.image_size
  return common.single_image_batch(
    config, loader.load(config.hand.model, config.hand.side), n, size
  )


def _step_row(name, config, batch):
  method = registry.make(config)
  n = batch["images"].shape[0]
  params, extra = jax.jit(method.init)(jax.random.key(0), batch)
  tx = optax.adamw(1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, extra, key):
    (loss, (_, aux)), g = jax.value_and_grad(method.loss_fn, has_aux=True)(
      params, extra, batch, key, jnp.int32(10)
    )
    u, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, u)
    return params, opt, method.update_extra(extra, params, aux, jnp.int32(10)), loss

  key = jax.random.key(1)
  t0 = time.perf_counter()
  jax.block_until_ready(step(params, opt, extra, key))
  compile_s = time.perf_counter() - t0
  flops = common.jax_flops(step, params, opt, extra, key)
  sec = common.time_fn(lambda: jax.block_until_ready(step(params, opt, extra, key)), min_reps=3)
  return {"name": name, "batch": n, "ms": sec * 1e3, "images_s": n / sec,
          "gflops": flops / 1e9, "compile_s": compile_s, "flops_per_s": flops / sec}  # fmt: skip


def _torch_vit(cfg, size):
  import torch
  from torch import nn

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      d = cfg["width"]
      self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.attn = nn.MultiheadAttention(d, cfg["heads"], batch_first=True)
      self.mlp = nn.Sequential(
        nn.Linear(d, cfg["mlp_dim"]), nn.GELU(), nn.Linear(cfg["mlp_dim"], d)
      )

    def forward(self, x):
      y = self.n1(x)
      x = x + self.attn(y, y, y, need_weights=False)[0]
      return x + self.mlp(self.n2(x))

  class ViT(nn.Module):
    def __init__(self):
      super().__init__()
      d, p = cfg["width"], cfg["patch"]
      self.embed = nn.Conv2d(3, d, p, p)
      self.cls = nn.Parameter(torch.zeros(1, 1, d))
      self.pos = nn.Parameter(torch.zeros(1, 1 + (size // p) ** 2, d))
      self.blocks = nn.ModuleList([Block() for _ in range(cfg["depth"])])
      self.norm = nn.LayerNorm(d)

    def forward(self, x):
      x = self.embed(x).flatten(2).transpose(1, 2)
      x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
      for b in self.blocks:
        x = b(x)
      return self.norm(x)

  return ViT()


def _vit_rows(cfg, size, n):
  net = vit.ViT(**cfg)
  x = jax.random.normal(jax.random.key(0), (n, size, size, 3))
  params = net.init(jax.random.key(1), x[:1])
  grad = jax.jit(jax.grad(lambda p, x: jnp.mean(net.apply(p, x).tokens ** 2)))
  jax.block_until_ready(grad(params, x))
  fns = {"handflow (JAX)": lambda: jax.block_until_ready(grad(params, x))}
  flops = common.jax_flops(grad, params, x)
  try:
    import torch
  except ImportError:
    torch = None
  if torch is not None:
    tnet = _torch_vit(cfg, size)
    tx = torch.randn(n, 3, size, size)

    def torch_step():
      tnet.zero_grad(set_to_none=True)
      (tnet(tx) ** 2).mean().backward()

    fns["PyTorch " + torch.__version__] = torch_step
  best = common.time_interleaved(fns, rounds=3, reps=2)
  rows = [{"name": f"ViT-{_VIT.value} fwd+bwd, {k}", "batch": n, "ms": s * 1e3,
           "images_s": n / s, "gflops": flops / 1e9, "flops_per_s": flops / s}
          for k, s in best.items()]  # fmt: skip
  ours = best["handflow (JAX)"]
  for r, s in zip(rows, best.values(), strict=True):
    r["vs_handflow"] = s / ours
  if torch is None:
    rows.append({"name": "PyTorch: not installed (pip install -e .[bench])"})
  return rows


def main(argv):
  del argv
  config = _CONFIG.value
  peak = common.matmul_peak_gflops() * 1e9
  n = int(config.batch_size)
  rows = []
  for stage in ("pretrain", "finetune"):
    c = stages.apply(config, config.stages[stage]) if config.get("stages") else config
    rows.append(_step_row(f"{stage} step ({c.model.vit}, {c.data.crop_size} px)", c,
                          _batch(c, n)))  # fmt: skip
  rows += _vit_rows(vit.variant(_VIT.value), _SIZE.value, _BATCH.value)
  for r in rows:
    if "flops_per_s" in r:
      r["utilisation"] = r["flops_per_s"] / peak
  common.print_table(rows, [
    ("name", "", "{}"), ("batch", "batch", "{}"), ("ms", "ms", "{:,.1f}"),
    ("images_s", "images/s", "{:,.1f}"), ("gflops", "GFLOP", "{:,.2f}"),
    ("utilisation", "of GEMM peak", "{:.0%}"), ("vs_handflow", "time / handflow's", "{:.2f}"),
    ("compile_s", "compile s", "{:.1f}"),
  ])  # fmt: skip
  print(f"GEMM peak {peak / 1e9:,.0f} GFLOP/s")
  path = common.write_json("handmim", {"machine": common.machine(), "peak_gflops": peak / 1e9,
                                       "rows": rows}, _OUT.value)  # fmt: skip
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
