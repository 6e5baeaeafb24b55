"""HandMIM's pre-training network: a ViT and the heads of its three objectives.

  out = MIMNet(vit_cfg, ...).apply(params, views[n, s, s, 3], mask[n, g*g], train=True,
                                   rngs={"dropout": key})
  out["cls"]           [n, width]    the [CLS] token (after the final norm)
  out["cls_logits"]    [n, K]        iBOT head on the [CLS] token
  out["patch_logits"]  [n, g*g, K]   the same head on every patch token
  out["keypoints"]     [n, k, 2]     pseudo keypoints from the [CLS] token (crop units; the
                                     untrained head says the crop's centre)
  out["pixels"]        [m, n, g*g, patch*patch*3]  pixel predictions from m depths

The iBOT head (shared by [CLS] and patches, as in iBOT): a 3-layer MLP (GELU) -> bottleneck ->
L2 normalisation -> a weight-normalised linear layer (no bias, unit-norm columns) to K
prototypes. The ViT sits under "backbone", the name fine-tuning loads.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from handflow.models import vit


class IBOTHead(nn.Module):
  hidden: int
  bottleneck: int
  prototypes: int

  @nn.compact
  def __call__(self, x):
    x = nn.gelu(nn.Dense(self.hidden, name="mlp_0")(x))
    x = nn.gelu(nn.Dense(self.hidden, name="mlp_1")(x))
    x = nn.Dense(self.bottleneck, name="mlp_2")(x)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    v = self.param(
      "prototypes", nn.initializers.truncated_normal(0.02), (self.bottleneck, self.prototypes)
    )
    w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-6)
    return x @ w.astype(x.dtype)


class MIMNet(nn.Module):
  vit_cfg: dict
  drop_path: float = 0.0
  head_hidden: int = 256
  bottleneck: int = 64
  prototypes: int = 512
  keypoints: int = 21
  pixel_depths: tuple[int, ...] = ()  # block indices whose outputs reconstruct pixels

  @nn.compact
  def __call__(self, images, mask=None, train: bool = False) -> dict:
    out = vit.ViT(**self.vit_cfg, drop_path=self.drop_path, name="backbone")(images, mask, train)
    head = IBOTHead(self.head_hidden, self.bottleneck, self.prototypes, name="ibot_head")
    logits = head(out.tokens)
    cls = out.tokens[:, 0]
    kp = nn.Dense(self.head_hidden, name="keypoint_hidden")(cls)
    kp = nn.Dense(self.keypoints * 2, kernel_init=nn.initializers.zeros, name="keypoint_out")(
      nn.gelu(kp)
    )
    p = self.vit_cfg["patch"]
    pixels = [
      nn.Dense(p * p * 3, name=f"pixel_decoder_{d}")(nn.LayerNorm(name=f"pixel_norm_{d}")(
        out.layers[d][:, 1:]))
      for d in self.pixel_depths
    ]  # fmt: skip
    return {
      "cls": cls,
      "cls_logits": logits[:, 0],
      "patch_logits": logits[:, 1:],
      "keypoints": kp.reshape(kp.shape[0], self.keypoints, 2) + 0.5,
      "pixels": jnp.stack(pixels) if pixels else jnp.zeros((0,) + logits.shape[:1]),
    }
