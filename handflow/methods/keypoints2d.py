"""A 2D keypoint regressor trained on pseudo-labels: the per-image baseline.

Every view of every frame is one image: a small residual ConvNet (width and depth from
`config.model`) regresses the 21 keypoints in crop pixels, trained with a confidence-weighted
smooth-L1 loss against the pseudo-labels (`uv_pl`, `conf`); missing detections (confidence 0)
and padded samples (mask 0) count for nothing. `predict` gives `uv`; the config's `uv2d`
evaluator reports its mean 2D error against the ground truth (pixels) and the pseudo-labels' own
(the teacher), as exact dataset means. It is the deterministic-head baseline that UST-Hand's
flow is compared with.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from handflow.methods import base, losses


class ConvNet(nn.Module):
  """Strided residual blocks -> global average pool -> 42 outputs in [0, 1] (u, v / size)."""

  width: int = 32
  depth: int = 4

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.width, (3, 3), strides=2)(x)
    for i in range(self.depth):
      ch = self.width * 2 ** min(i, 3)
      y = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(ch, (3, 3), strides=2)(nn.relu(x))))
      y = nn.Conv(ch, (3, 3))(y)
      x = nn.Conv(ch, (1, 1), strides=2)(x) + y
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.sigmoid(nn.Dense(42)(x)).reshape(x.shape[0], 21, 2)


def _images(batch):
  """[b, t, v, s, s, 3] -> [b*t*v, s, s, 3] and the leading shape."""
  img = batch["images"]
  return img.reshape((-1,) + img.shape[-3:]), img.shape[:3]


class Keypoints2D(base.MethodBase):
  name = "keypoints2d"
  title = "2D keypoint regressor"

  def __init__(self, width: int = 32, depth: int = 4):
    self.net = ConvNet(width, depth)

  def init(self, rng, batch):
    img, _ = _images(batch)
    return self.net.init(rng, img[:1]), {}

  def predict(self, params, extra, batch):
    """uv [b, t, v, 21, 2] in crop pixels (no 3D output: no `joints`)."""
    del extra
    img, lead = _images(batch)
    size = img.shape[1]
    return {"uv": (self.net.apply(params, img) * size - 0.5).reshape(lead + (21, 2))}

  def loss_fn(self, params, extra, batch, rng, step):
    del rng, step
    uv = self.predict(params, extra, batch)["uv"]
    size = batch["images"].shape[-2]
    # Normalised by the crop size so that the loss does not scale with it.
    smooth = losses.smooth_l1((uv - batch["uv_pl"]) / size)
    loss = losses.weighted_mean(smooth, batch["conf"] * batch["mask"][:, None, None, None])
    return loss, ({"weighted_l1": loss}, None)
