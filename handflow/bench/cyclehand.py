"""CycleHand's training step, split by part, on an in-memory batch of the config's shape.

  python -m handflow.bench.cyclehand [--config=configs/cyclehand.py] [--out=DIR]

Times (best of repeated calls, compiled; the batch is random images of the config's crop size
with the open hand's ground truth): the whole step (loss + gradient), the network alone (one
forward + backward over the input images, and the forward over the two render batches the cycle
and the contrastive pair feed it), the differentiable photometric render (forward + gradient,
per mesh, of the batch's ground-truth hands; the config's `renderer` and, for comparison, the
other one), the sharp render
(forward, per image), and the regressor + hand kernel. The rendering share is (2
differentiable + the config's sharp renders per image: (b) for the cycle, and the contrastive
pair's re-rendering only when no photometric term made render (a)) / step. Writes
bench_results/cyclehand.json.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from handflow.bench import common
from handflow.methods import cyclehand
from handflow.render import antialias, hand_render

CONFIG = config_flags.DEFINE_config_file("config", "configs/cyclehand.py", "Experiment config.")
OUT = flags.DEFINE_string("out", None, "JSON output path.")


def main(argv):
  del argv
  config = CONFIG.value
  method = cyclehand.CycleHand(config)
  size = int(config.data.crop_size or config.data.image_size)
  n = int(config.batch_size)
  batch = common.single_image_batch(config, method.model, n, size)
  params, extra = method.init(jax.random.key(0), batch)
  step = jax.jit(
    jax.value_and_grad(
      lambda p, b: method.loss_fn(p, extra, b, jax.random.key(1), 10**6)[0]
    )  # past the warm-up: every term on
  )
  t0 = time.perf_counter()
  jax.block_until_ready(step(params, batch))
  compile_s = time.perf_counter() - t0
  rows = [dict(part="whole step (loss + grad)", per_step_ms=1e3 * common.time_fn(
    lambda: jax.block_until_ready(step(params, batch))))]  # fmt: skip
  images = batch["images"].reshape(n, size, size, 3)

  def net_loss(p, x):
    out = method.net.apply(p, x, rngs={"texture": jax.random.key(0)})
    return sum(jnp.mean(jnp.abs(leaf)) for leaf in jax.tree.leaves(out))

  net_grad = jax.jit(jax.grad(net_loss))
  net_fwd = jax.jit(lambda p, x: method.net.apply(p, x))
  twice = jnp.concatenate([images, images])
  rows.append(dict(part=f"network fwd+bwd, {n} images", per_step_ms=1e3 * common.time_fn(
    lambda: jax.block_until_ready(net_grad(params, images)))))  # fmt: skip
  rows.append(dict(part=f"network fwd, {2 * n} renders", per_step_ms=1e3 * common.time_fn(
    lambda: jax.block_until_ready(net_fwd(params, twice)))))  # fmt: skip
  K = batch["K"].reshape(n, 3, 3)
  h = jax.jit(lambda p: method._forward(p, images, K))(params)
  # The renders draw the batch's ground-truth hands (the size of a trained net's hands in a
  # crop; the untrained net's are smaller) with the net's appearance.
  verts = jnp.asarray(common.crop_hands(method.model, n, size)[1], jnp.float32)
  faces = method.model.faces
  bg = jnp.zeros((n, size, size, 3))

  # The config's differentiable renderer first (it is in the step), then the other one.
  used = config.get("renderer", "soft")
  for name in sorted(cyclehand.RENDERERS, key=lambda r: r != used):
    fn = cyclehand.RENDERERS[name]

    def diff_loss(verts, albedo, fn=fn):
      rgb, sil = fn(verts, faces, K, (size, size), albedo, h.light, bg)
      return jnp.mean(rgb) + jnp.mean(sil)

    grad = jax.jit(jax.grad(diff_loss, argnums=(0, 1)))
    sec = common.time_fn(lambda g=grad: jax.block_until_ready(g(verts, h.albedo)))
    note = "x2 per step: (a) and (d)" if name == used else "not in the step (comparison)"
    rows.append(dict(part=f"{name} render fwd+grad, {n} meshes", per_step_ms=2e3 * sec,
                     meshes_per_s=n / sec, note=note))  # fmt: skip
  sharp_uses = method.sharp_renders()
  sharp = jax.jit(lambda v: method.look.render_sharp(v, K, size, h.net.tex_offset, h.light, bg))
  sec = common.time_fn(lambda: jax.block_until_ready(sharp(verts)))
  note = f"x{len(sharp_uses)} per step: {', '.join(sharp_uses) or '-'}"
  rows.append(dict(part=f"sharp render fwd, {n} images", per_step_ms=len(sharp_uses) * 1e3 * sec,
                   images_per_s=n / sec, note=note))  # fmt: skip
  place = jax.jit(lambda p: method._forward(p, images, K).joints)
  rows.append(dict(part=f"network fwd + hand kernel, {n} images", per_step_ms=1e3 * common.time_fn(
    lambda: jax.block_until_ready(place(params)))))  # fmt: skip
  blend = float(hand_render.blend_share(verts, faces, K, (size, size)))
  render_ms = rows[3]["per_step_ms"] + rows[5]["per_step_ms"]
  share = render_ms / rows[0]["per_step_ms"]
  print(f"CycleHand step, batch {n} images of {size}^2, {config.model.backbone_depth}-layer "
        f"backbone; compile {compile_s:.1f} s; device: {common.machine()}\n")  # fmt: skip
  common.print_table(
    rows,
    [("part", "part", "{}"), ("per_step_ms", "ms / step", "{:,.0f}"),
     ("meshes_per_s", "meshes/s", "{:,.0f}"), ("images_per_s", "images/s", "{:,.0f}"),
     ("note", "", "{}")],
  )  # fmt: skip
  print(f"\nrendering (2 {used} fwd+grad + {len(sharp_uses)} sharp fwd) / step: {share:.2f}")
  walk = "compacted" if blend <= antialias.CAPACITY else "every pair: over capacity"
  print(f"antialiasing: {blend:.2f} of the batch's pixel pairs can blend "
        f"(capacity {antialias.CAPACITY}: {walk})")  # fmt: skip
  common.write_json(
    "cyclehand",
    dict(rows=rows, compile_s=compile_s, render_share=share, blend_share=blend),
    OUT.value,
  )


if __name__ == "__main__":
  app.run(main)
