"""UST-Hand's two learned stages (Flax). The geometry between them is `point_cloud`; the
method (`handflow.methods.ust`) wires them together with the hand model and the losses.

Stage1, per image: ResNet feature map -> 21 heatmaps; each joint's coarse position mu is the
heatmap's soft-argmax and its feature the heatmap-weighted feature (plus a joint embedding),
refined by an MLP into h [21, D]; a per-coordinate scale sigma from h; the conditional flow's
context from h (or nothing, for the deterministic head). Positions are in crop units [0, 1].

Stage2, per clip: point tokens (geometric + image features + joint embedding) -> the
spatiotemporal point transformer -> per joint a refining offset of its mode, and per frame a
MANO head: the 15 finger joints' rotations as 6D residuals (zero = the flat hand) and shape.
The method places the articulated hand on the refined joints by a similarity fit. The last
layers start at zero, so an untrained model outputs the flat mean hand fitted to the
triangulated modes.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from handflow.models import flow, resnet, transformer

NUM_KEYPOINTS = 21
SIGMA_MIN = 0.002  # crop units: sigma never collapses to 0 (NLL would diverge)
SIGMA_UNIT = 0.1  # crop units: sigma at initialisation ~ SIGMA_UNIT * log 2 (9 px of 128)


class Stage1(nn.Module):
  depth: int = 18
  width: int = 64
  stride: int = 8
  features: int = 128
  joint_dim: int = 128
  use_flow: bool = True
  flow_layers: int = 6
  flow_hidden: int = 64

  @nn.compact
  def __call__(self, images):
    """images [n, s, s, 3] -> dict(mu, sigma [n, 21, 2], h [n, 21, D], fmap [n, h, w, C],
    log_heatmap [n, h, w, 21] (log-probabilities over positions), and flow_ctx / flow_weights
    when use_flow)."""
    fmap = resnet.ResNet(self.depth, self.width, self.stride, self.features)(images)
    n, hh, ww, c = fmap.shape
    logits = nn.Conv(NUM_KEYPOINTS, (1, 1))(fmap).reshape(n, hh * ww, NUM_KEYPOINTS)
    log_prob = nn.log_softmax(logits, axis=1)  # over positions
    prob = jnp.exp(log_prob)
    gx = (jnp.arange(ww) + 0.5) / ww
    gy = (jnp.arange(hh) + 0.5) / hh
    grid = jnp.stack(jnp.meshgrid(gx, gy), -1).reshape(hh * ww, 2).astype(fmap.dtype)
    mu = jnp.einsum("npj,pd->njd", prob, grid)
    pooled = jnp.einsum("npj,npc->njc", prob, fmap.reshape(n, hh * ww, c))
    embed = self.param("joint_embed", nn.initializers.normal(0.02), (NUM_KEYPOINTS, c))
    h = nn.Dense(self.joint_dim)(nn.LayerNorm()(pooled + embed))
    h = h + nn.Dense(self.joint_dim)(nn.gelu(nn.Dense(self.joint_dim)(nn.gelu(h))))
    sigma = SIGMA_MIN + SIGMA_UNIT * nn.softplus(nn.Dense(2)(h))
    out = dict(mu=mu, sigma=sigma, h=h, fmap=fmap, log_heatmap=log_prob.reshape(n, hh, ww, -1))
    if self.use_flow:
      ctx, weights = flow.ConditionalFlow(self.flow_layers, self.flow_hidden)(h)
      out.update(flow_ctx=ctx, flow_weights=weights)
    return out


class Stage2(nn.Module):
  dim: int = 128
  spatial_layers: int = 2
  joint_layers: int = 2
  heads: int = 4
  temporal: bool = True
  num_betas: int = 10

  @nn.compact
  def __call__(self, geom, img, valid):
    """geom [b, t, j, s, g], img [b, t, j, s, c], valid [b, t, j, s] -> dict(joint_offset
    [b, t, j, 3] (refined joints = modes + offset, canonical units), rot6d_delta [b, t, 15, 6]
    (the finger joints' local rotations), betas [b, t, nb])."""
    b, t, j, s, _ = geom.shape
    joint = self.param("joint_embed", nn.initializers.normal(0.02), (j, self.dim))
    x = nn.Dense(self.dim)(geom) + nn.Dense(self.dim)(nn.LayerNorm()(img)) + joint[:, None]
    x = transformer.SpatioTemporalTransformer(
      self.spatial_layers, self.joint_layers, self.heads, self.temporal
    )(x, valid)
    offset = nn.Dense(3, kernel_init=nn.initializers.zeros)(x)
    y = nn.gelu(nn.Dense(2 * self.dim)(x.reshape(b, t, j * self.dim)))
    out = nn.Dense(15 * 6 + self.num_betas, kernel_init=nn.initializers.zeros)(y)
    return dict(
      joint_offset=offset,
      rot6d_delta=out[..., :90].reshape(b, t, 15, 6),
      betas=out[..., 90:],
    )
