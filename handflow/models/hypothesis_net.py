"""UST-Hand's per-image network: where each joint may be, as a density over 2D positions.

`HypothesisNet`, per image: ResNet feature map -> 21 heatmaps; each joint's coarse position mu
is the heatmap's soft-argmax and its feature the heatmap-weighted feature (plus a joint
embedding), refined by an MLP into h [21, D]; a per-coordinate scale sigma from h; the
conditional flow's context from h (or nothing, for the deterministic head). Positions are in
crop units [0, 1]. The method (`handflow.methods.ust`) samples the flow's K hypotheses.
"""

from __future__ import annotations

import flax.linen as nn

from handflow.models import flow, heatmaps, resnet

NUM_KEYPOINTS = heatmaps.NUM_KEYPOINTS
SIGMA_MIN = 0.002  # crop units: sigma never collapses to 0 (NLL would diverge)
SIGMA_UNIT = 0.1  # crop units: sigma at initialisation ~ SIGMA_UNIT * log 2 (9 px of 128)


class HypothesisNet(nn.Module):
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
    fmap = resnet.ResNet(self.depth, self.width, self.stride, self.features, name="backbone")(
      images
    )
    c = fmap.shape[-1]
    logits = nn.Conv(NUM_KEYPOINTS, (1, 1), name="heatmap")(fmap)
    log_prob, mu, pooled = heatmaps.read(logits, fmap)
    embed = self.param("joint_embed", nn.initializers.normal(0.02), (NUM_KEYPOINTS, c))
    h = nn.Dense(self.joint_dim, name="joint_proj")(nn.LayerNorm(name="joint_norm")(pooled + embed))
    mlp_out = nn.Dense(self.joint_dim, name="joint_mlp_out")
    h = h + mlp_out(nn.gelu(nn.Dense(self.joint_dim, name="joint_mlp_in")(nn.gelu(h))))
    sigma = SIGMA_MIN + SIGMA_UNIT * nn.softplus(nn.Dense(2, name="sigma")(h))
    out = dict(mu=mu, sigma=sigma, h=h, fmap=fmap, log_heatmap=log_prob)
    if self.use_flow:
      ctx, weights = flow.ConditionalFlow(self.flow_layers, self.flow_hidden, name="flow")(h)
      out.update(flow_ctx=ctx, flow_weights=weights)
    return out
