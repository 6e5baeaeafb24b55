"""The Vision Transformer every method uses (Dosovitskiy et al. 2021), written once.

  cfg = vit.variant("S/16")                       # {"width", "depth", "mlp_dim", "heads", "patch"}
  net = vit.ViT(**cfg, drop_path=0.1)
  out = net.apply(params, images[n, s, s, 3], mask=mask[n, g*g], train=True,
                  rngs={"dropout": key})
  out.tokens   [n, 1 + g*g, width]  the final (normed) tokens: [CLS] first, then the patch grid
                                    row-major (g = s // patch)
  out.layers   tuple of depth [n, 1 + g*g, width]: every block's output (before the final norm);
               unused ones cost nothing under jit
  vit.patch_grid(out.tokens)  [n, g, g, width]

- Variants are strings "<size>/<patch>": sizes Mu (width 128, depth 4, 4 heads: the 2-core CPU
  budget on 64-128 px crops, with patch 8), Ti, S, B (the paper scale, patch 16); any patch size.
- Pre-norm blocks (LN -> attention -> residual, LN -> MLP -> residual), stochastic depth growing
  linearly to `drop_path` at the last block (a per-example rng "dropout"; off unless `train`).
- Masked image modeling: `mask[n, g*g]` (True = masked) replaces those patch embeddings by one
  learnable `mask_token` before the position embeddings are added (BEiT/iBOT: the model still
  knows where a masked patch sits). The student processes every token; it does not drop masked
  ones (MAE-style dropping would not let the [CLS] and patch heads see the mask token).
- Position embeddings are learnt for a fixed grid; `resample_pos_embedding` adapts them to
  another grid (a fine-tuning crop of another size) and `load` applies it to a restored tree.

Parameter names follow the layer-decay conventions of `handflow.optim` ("embedding",
"pos_embedding", "cls", "mask_token", "blocks_<i>", "norm").
"""

from __future__ import annotations

import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SIZES = {  # width, depth, mlp_dim, heads
  "Mu": (128, 4, 512, 4),
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "B": (768, 12, 3072, 12),
}


class ViTConfigError(ValueError):
  """A ViT variant string handflow cannot parse."""


def variant(name: str, **overrides) -> dict:
  """ "S/16" -> {"width", "depth", "mlp_dim", "heads", "patch"}; `overrides` (non-zero values)
  replace entries (a shallower test model: depth=2)."""
  m = re.fullmatch(r"(\w+)/(\d+)", str(name))
  if not m or m.group(1) not in SIZES:
    raise ViTConfigError(
      f"ViT variant '{name}': expected '<size>/<patch>' with size one of {sorted(SIZES)}"
    )
  width, depth, mlp_dim, heads = SIZES[m.group(1)]
  cfg = dict(width=width, depth=depth, mlp_dim=mlp_dim, heads=heads, patch=int(m.group(2)))
  unknown = set(overrides) - set(cfg)
  if unknown:
    raise ViTConfigError(f"ViT overrides {sorted(unknown)}: known keys {sorted(cfg)}")
  cfg.update({k: int(v) for k, v in overrides.items() if v})
  if cfg["width"] % cfg["heads"]:
    raise ViTConfigError(f"ViT width {cfg['width']} is not divisible by heads {cfg['heads']}")
  return cfg


def describe(cfg: dict) -> str:
  return "ViT(width {width}, depth {depth}, heads {heads}, patch {patch})".format(**cfg)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["tokens", "layers"],
                   meta_fields=[])  # fmt: skip
@dataclasses.dataclass(frozen=True)
class ViTOutput:
  tokens: jax.Array
  layers: tuple


def patch_grid(tokens):
  """[n, 1 + g*g, d] -> the patch tokens as a grid [n, g, g, d]."""
  n, p, d = tokens.shape
  g = int(round(np.sqrt(p - 1)))
  return tokens[:, 1:].reshape(n, g, g, d)


class DropPath(nn.Module):
  """Stochastic depth: the residual branch of a whole example is dropped with probability
  `rate` (and the kept ones scaled by 1 / (1 - rate))."""

  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = jax.random.bernoulli(
      self.make_rng("dropout"), 1.0 - self.rate, (x.shape[0],) + (1,) * (x.ndim - 1)
    )
    return jnp.where(keep, x / (1.0 - self.rate), 0.0)


class Block(nn.Module):
  heads: int
  mlp_dim: int
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool):
    drop = DropPath(self.drop_path)
    y = nn.LayerNorm(name="norm1")(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(y, y)
    x = x + drop(y, train)
    y = nn.LayerNorm(name="norm2")(x)
    y = nn.Dense(self.mlp_dim, name="mlp_in")(y)
    y = nn.Dense(x.shape[-1], name="mlp_out")(nn.gelu(y))
    return x + drop(y, train)


class ViT(nn.Module):
  width: int
  depth: int
  mlp_dim: int
  heads: int
  patch: int
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, images, mask=None, train: bool = False) -> ViTOutput:
    """images [n, s, s, 3] (s a multiple of `patch`), mask [n, g*g] bool or None."""
    n, h, w, _ = images.shape
    if h % self.patch or w % self.patch:
      raise ValueError(f"ViT: image size {h}x{w} is not a multiple of the patch size {self.patch}")
    x = nn.Conv(self.width, (self.patch,) * 2, strides=(self.patch,) * 2, name="embedding")(images)
    x = x.reshape(n, -1, self.width)
    if mask is not None:
      token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
      x = jnp.where(mask[..., None], token.astype(x.dtype), x)
    else:  # the parameter exists either way (one tree for pre-training and fine-tuning)
      self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.width)).astype(x.dtype), x], 1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1,) + x.shape[1:])
    x = x + pos.astype(x.dtype)
    layers = []
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)
      x = Block(self.heads, self.mlp_dim, rate, name=f"blocks_{i}")(x, train)
      layers.append(x)
    return ViTOutput(nn.LayerNorm(name="norm")(x), tuple(layers))


def resample_pos_embedding(pos, grid: int):
  """pos [1, 1 + g*g, d] -> [1, 1 + grid*grid, d]: the [CLS] entry kept, the grid resized
  (bicubic, no antialiasing: the usual choice for ViT position embeddings, and the one that
  round-trips best). The same grid returns `pos` unchanged."""
  g = int(round(np.sqrt(pos.shape[1] - 1)))
  if g * g + 1 != pos.shape[1]:
    raise ValueError(f"position embeddings of shape {pos.shape}: not 1 + a square grid")
  if g == grid:
    return pos
  d = pos.shape[-1]
  patches = jax.image.resize(pos[0, 1:].reshape(g, g, d), (grid, grid, d), "cubic", antialias=False)
  return jnp.concatenate([pos[:, :1], patches.reshape(1, grid * grid, d)], 1)


def load(restored_vit: dict, target_vit: dict) -> dict:
  """A restored ViT subtree adapted to the target's shapes: position embeddings resampled to
  the target's grid (another crop size or patch count); everything else as restored (a shape
  mismatch there is the loader's to report)."""
  out = dict(restored_vit)
  if "pos_embedding" in out and "pos_embedding" in target_vit:
    grid = int(round(np.sqrt(np.shape(target_vit["pos_embedding"])[1] - 1)))
    pos = resample_pos_embedding(jnp.asarray(out["pos_embedding"]), grid)
    out["pos_embedding"] = np.asarray(pos)
  return out
