"""ResNet backbones with a small feature pyramid (per-joint heads need a fine feature map).

depth 10/18/34 use basic blocks, 50 bottleneck blocks (He et al. 2016). GroupNorm instead of
BatchNorm: per-example statistics, so there is no mutable state to synchronise across hosts
and batches of a few clips train the same as large ones. The pyramid upsamples the deepest
stage to `out_stride` (4, 8, 16 or 32), adding 1x1 lateral projections of the stages on the way.
`stem_stride` 4 is the standard stem (a stride-2 7x7 convolution and a stride-2 max pool); 2
drops the max pool, for small crops where a finger is a few pixels wide: every stage then runs
at twice the resolution (4x the cost) and the strides above halve (`out_stride` 2 to 16).
"""

from __future__ import annotations

import flax.linen as nn
import jax

STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _norm(ch, zero: bool = False):
  # Zero-initialised last norm of each residual branch: every block starts as the identity.
  init = nn.initializers.zeros if zero else nn.initializers.ones
  return nn.GroupNorm(num_groups=min(32, max(1, ch // 8)), scale_init=init)


class BasicBlock(nn.Module):
  ch: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    y = nn.relu(_norm(self.ch)(nn.Conv(self.ch, (3, 3), self.stride, use_bias=False)(x)))
    y = _norm(self.ch, zero=True)(nn.Conv(self.ch, (3, 3), use_bias=False)(y))
    if x.shape[-1] != self.ch or self.stride != 1:
      x = _norm(self.ch)(nn.Conv(self.ch, (1, 1), self.stride, use_bias=False)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  ch: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    out = self.ch * 4
    y = nn.relu(_norm(self.ch)(nn.Conv(self.ch, (1, 1), use_bias=False)(x)))
    y = nn.relu(_norm(self.ch)(nn.Conv(self.ch, (3, 3), self.stride, use_bias=False)(y)))
    y = _norm(out, zero=True)(nn.Conv(out, (1, 1), use_bias=False)(y))
    if x.shape[-1] != out or self.stride != 1:
      x = _norm(out)(nn.Conv(out, (1, 1), self.stride, use_bias=False)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """images [n, s, s, 3] -> feature map [n, s / out_stride, s / out_stride, features]."""

  depth: int = 18
  width: int = 64
  out_stride: int = 8
  features: int = 128
  stem_stride: int = 4

  @nn.compact
  def __call__(self, x):
    if self.depth not in STAGES:
      raise ValueError(
        f"config.model.backbone_depth = {self.depth}: expected one of {sorted(STAGES)}"
      )
    if self.stem_stride not in (2, 4):
      raise ValueError(f"config model.stem_stride = {self.stem_stride}: expected 2 or 4")
    s0 = self.stem_stride
    if self.out_stride not in (s0, 2 * s0, 4 * s0, 8 * s0):
      raise ValueError(
        f"feature stride must be {s0}, {2 * s0}, {4 * s0} or {8 * s0} with a stride-{s0} stem, "
        f"got {self.out_stride}"
      )
    block = Bottleneck if self.depth >= 50 else BasicBlock
    x = nn.relu(_norm(self.width)(nn.Conv(self.width, (7, 7), 2, use_bias=False)(x)))
    if s0 == 4:
      x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    feats = {}
    for i, n in enumerate(STAGES[self.depth]):
      for j in range(n):
        x = block(self.width * 2**i, stride=2 if (i > 0 and j == 0) else 1)(x)
      feats[s0 * 2**i] = x
    y = nn.Conv(self.features, (1, 1))(x)
    stride = 8 * s0
    while stride > self.out_stride:
      stride //= 2
      n, h, w, c = y.shape
      y = jax.image.resize(y, (n, h * 2, w * 2, c), "nearest")
      y = y + nn.Conv(self.features, (1, 1))(feats[stride])
    y = nn.relu(_norm(self.features)(nn.Conv(self.features, (3, 3))(y)))
    return y
