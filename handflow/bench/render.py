"""Renderer throughput on the open hand: hard z-buffer, soft and antialiased (differentiable).

  python -m handflow.bench.render [--batch=32]

The open hand (3,316 triangles), posed randomly, seen by a camera that frames it in the image
(as the data generator's crops do), at several image sizes: hard-mode images/s (fragments of a
batch, vmapped), soft silhouette forward+grad meshes/s (gradient of a silhouette loss with respect
to the vertices), soft colour+depth forward images/s, and CycleHand's photometric render
(`hand_render.render_soft` against `render_aa`: lit colour + silhouette, gradient of an L1 +
silhouette loss in the vertices and albedo) meshes/s, the antialiased one as a batch
(`render_aa_batch`) and one render at a time (a vmap of `render_aa`), with their ratio. Writes
bench_results/render.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.bench import common
from handflow.geometry import cameras
from handflow.render import hand_render, raster, soft


def posed_hands(model, b, seed=0):
  rng = np.random.default_rng(seed)
  pose = jnp.asarray(rng.normal(0, 0.2, (b, 45)), jnp.float32)
  out = hand.forward(model, pose)
  return out.vertices - jnp.mean(out.vertices, axis=1, keepdims=True)


def camera_for(size):
  """A camera 0.6 m away whose image spans ~1.3 hand lengths (a hand crop)."""
  f = size * 0.6 / 0.24
  K = jnp.asarray([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]], jnp.float32)
  return K, cameras.look_at(jnp.asarray([0.0, 0.15, 0.58]), jnp.zeros(3))


def _photometric_grad_seconds(render, vc, faces, K, size):
  """Seconds for the gradient in the vertices and albedo of an L1 + silhouette loss of lit,
  textured renders (CycleHand's photometric term) of the batch vc [b, n, 3]; `render` takes
  a batch (`hand_render.render_aa_batch`'s arguments)."""
  b = vc.shape[0]
  albedo = jnp.full((faces.shape[0], 3, 3), 0.6)
  light = hand_render.Light(jnp.float32(0.4), jnp.float32(0.6), jnp.asarray([0.1, -0.1, 0.0]))
  light = jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), light)
  bg = jnp.full((b, size, size, 3), 0.2)
  Ks = jnp.broadcast_to(K, (b, 3, 3))
  batch = lambda v, alb: render(v, faces, Ks, (size, size), jnp.broadcast_to(alb, (b,) + alb.shape),
                                light, bg)  # fmt: skip
  target_rgb, target_sil = batch(vc, albedo)

  def loss(v, alb):
    rgb, sil = batch(v, alb)
    return jnp.mean(jnp.abs(rgb - target_rgb)) + jnp.mean((sil - target_sil) ** 2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  vc2 = vc + 0.002
  return common.time_fn(lambda: jax.block_until_ready(grad(vc2, albedo)), min_time_s=1.0)


def _aa_one_by_one(verts, faces, K, size, albedo, light, background):
  """`render_aa` vmapped over the batch: every pixel pair walked (the path before batches were
  antialiased in one pass), for the ratio."""
  one = lambda v, k, a, lt, bg: hand_render.render_aa(v, faces, k, size, a, lt, bg)
  return jax.vmap(one)(verts, K, albedo, light, background)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  model = hand.load("open")
  faces = model.faces
  b = args.batch
  verts = posed_hands(model, b)
  colors = jnp.full((model.num_vertices, 3), 0.7)
  rows = []
  for size in (32, 64, 128, 256):
    K, T = camera_for(size)
    vc = cameras.transform(T, verts)
    tiers = raster.tiers_for((size, size))
    hard = jax.jit(
      jax.vmap(lambda v, K=K, s=size, t=tiers: raster.rasterize(v, faces, K, (s, s), tiers=t))
    )
    frags = hard(vc)
    sec = common.time_fn(lambda h=hard, v=vc: jax.block_until_ready(h(v)), min_time_s=1.0)
    rows.append(
      dict(
        mode="hard", size=size, per_s=b / sec, ms=sec / b * 1e3, overflow=int(frags.overflow.max())
      )
    )
    if size > 128:
      continue
    target = jax.vmap(lambda v, K=K, s=size: soft.soft_silhouette(v, faces, K, (s, s)))(vc)

    def loss(v, K=K, s=size, target=target):
      sil = jax.vmap(lambda x: soft.soft_silhouette(x, faces, K, (s, s)))(v)
      return jnp.mean((sil - target) ** 2)

    grad = jax.jit(jax.grad(loss))
    vc2 = vc + 0.002
    sec = common.time_fn(lambda g=grad, v=vc2: jax.block_until_ready(g(v)), min_time_s=1.0)
    rows.append(dict(mode="soft silhouette fwd+grad", size=size, per_s=b / sec, ms=sec / b * 1e3))
    col = jax.jit(jax.vmap(lambda v, K=K, s=size: soft.soft_rasterize(v, faces, K, (s, s), colors)))
    sec = common.time_fn(lambda c=col, v=vc: jax.block_until_ready(c(v)), min_time_s=1.0)
    rows.append(dict(mode="soft colour+depth fwd", size=size, per_s=b / sec, ms=sec / b * 1e3))
    renders = (
      ("soft", hand_render.render_soft_batch),
      ("antialiased", hand_render.render_aa_batch),
      ("antialiased one by one", _aa_one_by_one),
    )
    for name, fn in renders:
      sec = _photometric_grad_seconds(fn, vc, faces, K, size)
      rows.append(dict(mode=f"{name} colour+silhouette fwd+grad", size=size, per_s=b / sec,
                       ms=sec / b * 1e3))  # fmt: skip
  print(f"open hand, {int(faces.shape[0])} triangles, batch {b}; device: {common.machine()}\n")
  rate = {(r["mode"], r["size"]): r["per_s"] for r in rows}
  for r in rows:
    if r["mode"].startswith("antialiased one by one"):
      r["batch_ratio"] = rate[("antialiased colour+silhouette fwd+grad", r["size"])] / r["per_s"]
  common.print_table(
    rows,
    [
      ("mode", "mode", "{}"),
      ("size", "size", "{}"),
      ("per_s", "images/s", "{:,.0f}"),
      ("ms", "ms/image", "{:.2f}"),
      ("overflow", "clipped faces", "{}"),
      ("batch_ratio", "batch / one by one", "{:.2f}"),
    ],
  )
  path = common.write_json(
    "render", {"machine": common.machine(), "batch": b, "rows": rows}, args.out
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
