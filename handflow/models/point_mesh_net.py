"""UST-Hand's per-clip network: from the probabilistic point cloud to refined joints and a hand.

`PointMeshNet`: point tokens (geometric + image features + joint embedding) -> the
spatiotemporal point transformer -> per point a fusion logit (added to its multi-view
likelihood score: the method fuses the cloud with their softmax), per joint a refining offset of
the fused point, and the shared MANO head (`models.mano_head`): the 15 finger joints' rotations
as 6D residuals (zero = the flat hand) and shape, one per clip (a hand's shape does not change
between frames). The method places the articulated hand on the refined joints by a rigid fit.
The last layers start at zero, so an untrained model outputs the flat mean hand fitted to the
likelihood-weighted cloud.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from handflow.models import mano_head, transformer


class PointMeshNet(nn.Module):
  dim: int = 128
  spatial_layers: int = 2
  joint_layers: int = 2
  heads: int = 4
  temporal: bool = True
  num_betas: int = 10

  @nn.compact
  def __call__(self, geom, img, valid):
    """geom [b, t, j, s, g], img [b, t, j, s, c], valid [b, t, j, s] -> (point logits
    [b, t, j, s], joint_offset [b, t, j, 3] (refined joints = fused points + offset, canonical
    units), ManoParams [b, t] with rot6d_delta [b, t, 15, 6] and betas [b, t, nb] (equal over
    the frames of a clip))."""
    b, t, j, s, _ = geom.shape
    joint = self.param("joint_embed", nn.initializers.normal(0.02), (j, self.dim))
    img_tokens = nn.Dense(self.dim, name="img_proj")(nn.LayerNorm(name="img_norm")(img))
    x = nn.Dense(self.dim, name="geom_proj")(geom) + img_tokens + joint[:, None]
    x, points = transformer.SpatioTemporalTransformer(
      self.spatial_layers, self.joint_layers, self.heads, self.temporal, name="transformer"
    )(x, valid)
    zeros = nn.initializers.zeros
    logits = nn.Dense(1, kernel_init=zeros, name="point_logit")(points)[..., 0]
    offset = nn.Dense(3, kernel_init=zeros, name="offset")(x)
    head = mano_head.ManoHead(2 * self.dim, self.num_betas, name="mano_head")
    out = head(x.reshape(b, t, j * self.dim))
    betas = jnp.broadcast_to(jnp.mean(out.betas, axis=1, keepdims=True), out.betas.shape)
    return logits, offset, mano_head.ManoParams(out.rot6d_delta, betas, out.camera)
