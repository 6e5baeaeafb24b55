"""Attention blocks and the spatiotemporal point transformer of UST-Hand.

Tokens are points of the probabilistic point cloud, x [b, t, j, s, c] (b clips, t frames,
j joints, s points per joint). Per layer group:
1. spatial: attention within a frame over all j * s points (hypotheses of every joint, so a
   joint's hypotheses see each other and the other joints'), masked where a point is invalid;
2. pooling per joint: a learned, masked softmax over the s points -> [b, t, j, c];
3. spatiotemporal: attention across joints within a frame, then across frames per joint
   (skipped with temporal=False, the ablation).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class Block(nn.Module):
  """Pre-LN transformer block over x [n, tokens, c]; mask [n, tokens] (True: attend to)."""

  heads: int = 4
  mlp_ratio: int = 2

  @nn.compact
  def __call__(self, x, mask=None):
    c = x.shape[-1]
    attn_mask = None if mask is None else nn.make_attention_mask(jnp.ones_like(mask), mask)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=c)(
      nn.LayerNorm()(x), mask=attn_mask
    )
    x = x + y
    y = nn.Dense(c * self.mlp_ratio)(nn.LayerNorm()(x))
    return x + nn.Dense(c)(nn.gelu(y))


class SpatioTemporalTransformer(nn.Module):
  """x [b, t, j, s, c], valid [b, t, j, s] -> (per-joint features [b, t, j, c], per-point
  tokens after the spatial layers [b, t, j, s, c])."""

  spatial_layers: int = 2
  joint_layers: int = 2
  heads: int = 4
  temporal: bool = True
  max_frames: int = 64

  @nn.compact
  def __call__(self, x, valid):
    b, t, j, s, c = x.shape
    if t > self.max_frames:
      raise ValueError(f"{t} frames per clip; the temporal embedding has {self.max_frames}")
    # A frame whose points are all invalid still attends to something (its own tokens).
    any_valid = jnp.any(valid, axis=(-2, -1), keepdims=True)
    valid = valid | ~any_valid
    tokens = x.reshape(b * t, j * s, c)
    mask = valid.reshape(b * t, j * s)
    for _ in range(self.spatial_layers):
      tokens = Block(self.heads)(tokens, mask)
    x = points = nn.LayerNorm()(tokens).reshape(b, t, j, s, c)
    score = nn.Dense(1)(x)[..., 0]
    score = jnp.where(valid, score, -1e9)
    weight = nn.softmax(score, axis=-1)
    x = jnp.einsum("btjs,btjsc->btjc", weight, x)
    if self.temporal:
      time_embed = self.param("time_embed", nn.initializers.normal(0.02), (self.max_frames, c))
      x = x + time_embed[:t][None, :, None]
    for _ in range(self.joint_layers):
      x = Block(self.heads)(x.reshape(b * t, j, c)).reshape(b, t, j, c)
      if self.temporal and t > 1:
        y = jnp.swapaxes(x, 1, 2).reshape(b * j, t, c)
        x = jnp.swapaxes(Block(self.heads)(y).reshape(b, j, t, c), 1, 2)
    return nn.LayerNorm()(x), points
