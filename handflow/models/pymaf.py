"""A PyMAF mesh-alignment head (Zhang et al. 2021) on a ViT's patch grid, and the network HandMIM
fine-tunes (REFERENCE §6).

  net = HandMeshNet(vit_cfg, ...); outs = net.apply(params, images[n, s, s, 3], project)
  outs: a list of `iterations` ManoParams (rot6d_delta [n, 16, 6] with the wrist's camera-frame
  orientation first, betas [n, nb], camera [n, 3]); the last is the prediction, every one is
  supervised. `project(ManoParams) -> uv [n, p, 2]` (crop units, [0, 1]) gives the positions of
  the mesh's (subsampled) vertices in the image: the caller owns the hand model and camera.

- Deconvolution pyramid: the patch grid [n, g, g, d] -> `deconv` 2x learned upsamplings
  (sub-pixel convolutions, `models.upsample`, in place of PyMAF's kernel-4 stride-2 transposed
  convolutions: 14x cheaper gradients on CPU; GroupNorm, ReLU): maps at 2g, 4g, 8g. Iteration
  i reads map i.
- Iteration 0 samples its map on a regular `grid_points` x `grid_points` grid; later iterations
  at the projected vertices of the current estimate (mesh-aligned features). A per-point MLP
  (`point_mlp`, the last width small: 5 in PyMAF) reduces each point's features; they are
  flattened, concatenated with the current estimate and a per-iteration regressor (two hidden
  layers, `hidden` wide) adds Δpose (6D), Δshape, Δcamera. Its output layer starts near zero
  (PyMAF: xavier gain 0.01), so every iteration starts as a small correction. The estimate is
  detached between iterations (PyMAF): each iteration learns its own correction.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from handflow.models import mano_head, sampling, upsample, vit


def grid_points(k: int) -> np.ndarray:
  """[k*k, 2] cell centres of a regular k x k grid over the crop, crop units."""
  c = (np.arange(k) + 0.5) / k
  return np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2).astype(np.float32)


def _flat(est: mano_head.ManoParams, n: int):
  return jnp.concatenate([est.rot6d_delta.reshape(n, -1), est.betas, est.camera], -1)


class PyMAFHead(nn.Module):
  num_betas: int
  deconv: tuple[int, ...] = (64, 64, 64)
  point_mlp: tuple[int, ...] = (64, 32, 5)
  grid_points: int = 8
  hidden: int = 256
  iterations: int = 3

  @nn.compact
  def __call__(self, fmap, project: Callable) -> list[mano_head.ManoParams]:
    n = fmap.shape[0]
    maps, x = [], fmap
    for i, ch in enumerate(self.deconv):
      x = upsample.Upsample2x(ch, use_bias=False, name=f"deconv_{i}")(x)
      x = nn.relu(nn.GroupNorm(num_groups=min(32, max(1, ch // 8)), name=f"deconv_norm_{i}")(x))
      maps.append(x)
    est = mano_head.ManoParams(
      rot6d_delta=jnp.zeros((n, 16, 6), fmap.dtype),
      betas=jnp.zeros((n, self.num_betas), fmap.dtype),
      camera=jnp.zeros((n, 3), fmap.dtype),
    )
    n_out = 16 * 6 + self.num_betas + 3
    small = nn.initializers.variance_scaling(1e-4, "fan_avg", "uniform")  # xavier, gain 0.01
    outs = []
    for i in range(self.iterations):
      est = jax.tree.map(jax.lax.stop_gradient, est)
      fm = maps[min(i, len(maps) - 1)]
      if i == 0:
        grid = jnp.asarray(grid_points(self.grid_points))
        uv = jnp.broadcast_to(grid, (n,) + grid.shape)
      else:
        uv = project(est)
      f = sampling.bilinear_sample(fm, uv)  # [n, p, c]
      for j, ch in enumerate(self.point_mlp):
        f = nn.Dense(ch, name=f"point_mlp_{i}_{j}")(f)
        if j < len(self.point_mlp) - 1:
          f = nn.leaky_relu(f)
      h = jnp.concatenate([f.reshape(n, -1), _flat(est, n)], -1)
      h = nn.relu(nn.Dense(self.hidden, name=f"regressor_{i}_0")(h))
      h = nn.relu(nn.Dense(self.hidden, name=f"regressor_{i}_1")(h))
      d = nn.Dense(n_out, kernel_init=small, name=f"regressor_{i}_out")(h)
      est = mano_head.ManoParams(
        rot6d_delta=est.rot6d_delta + d[:, : 16 * 6].reshape(n, 16, 6),
        betas=est.betas + d[:, 16 * 6 : 16 * 6 + self.num_betas],
        camera=est.camera + d[:, 16 * 6 + self.num_betas :],
      )
      outs.append(est)
    return outs


class HandMeshNet(nn.Module):
  """ViT ("backbone", the name pre-training saves) -> patch grid -> PyMAF head ("pymaf"; `head`:
  `PyMAFHead`'s fields)."""

  vit_cfg: dict
  head: dict
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, images, project: Callable, train: bool = False):
    out = vit.ViT(**self.vit_cfg, drop_path=self.drop_path, name="backbone")(images, None, train)
    return PyMAFHead(**self.head, name="pymaf")(vit.patch_grid(out.tokens), project)
