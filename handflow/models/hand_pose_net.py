"""CycleHand's HandPoseNet: image -> global feature -> hand, texture offset, light; a projection.

  net = HandPoseNet(...); out = net.apply(params, images[n, s, s, 3], rngs={"texture": key})
  out.mano          ManoParams: rot6d_delta [n, 16, 6] (wrist = camera-frame orientation),
                    betas [n, nb], camera [n, 3] (weak perspective, `mano_head.weak_perspective`)
  out.tex_offset    [n, r, r, 3] offset added to the base skin texture (UV space)
  out.tex_mu/logvar [n, z] the texture VAE's posterior (KL term)
  out.light         [n, 5] raw light (ambient, diffuse, direction; `light_from_raw`)
  out.proj          [n, p] L2-normalised projection of the global feature (NT-Xent)
  out.feature       [n, d] the global feature
  out.log_heatmap   [n, h, w, 21] log-probabilities of the 2D keypoint head (None without it)

- Backbone: `models.resnet.ResNet` (map at `pool_stride`) -> `pool` -> a dense layer to
  `feature_dim`. `pool="mean"` is HMR's global average. `pool="flatten"` projects each cell of
  the map to `pool_channels` and flattens them: a global average keeps little of where things
  lie in the crop, and on the CPU budget (64 px crops, a few thousand images) a regressor on it
  learned neither the wrist's place in the crop nor its orientation (issue 14's note).
- Keypoint head (`keypoints=True`): 21 heatmaps on the backbone's map at `keypoint_stride`;
  their soft-argmax positions and heatmap-weighted features (`models.heatmaps`) join the pooled
  map before the global feature, supervised densely (`losses.heatmap_cross_entropy`): the
  regressor can read an explicit 2D skeleton instead of discovering it from a global feature.
  Measured on the CPU budget it did not help (heatmaps still ~14 px wide after 300 steps;
  validation PA-MPJPE unchanged within 0.2 mm at `sup_pose` 10; README), so it is off there.
- Regressor: iterative error feedback (HMR, PyMAF): `iterations` applications of one shared
  `ManoHead` to [feature, current estimate], each adding its (zero-initialised) output to the
  estimate, which starts at the mean hand facing the camera with `CAMERA_INIT`.
- Texture head: a VAE (CycleHand's figure): the feature -> N(mu, sigma^2) over a small latent ->
  decoder to a low-resolution RGB offset map (zero at initialisation; bounded by tanh), sampled
  at the mesh's texture coordinates on top of the base map. Without a "texture" rng (predict)
  the mean latent is used.
- Light head: zero-initialised, so an untrained net lights the hand from above the camera with
  ambient 0.45 and diffuse 0.6.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from handflow.models import heatmaps, mano_head, resnet

LIGHT_INIT = (0.45, 0.6)  # ambient, diffuse of an untrained light head
LIGHT_DIRECTION = np.array([0.0, -0.6, -0.8], np.float32)  # from the hand towards the light
LIGHT_DISTANCE_M = 0.4
OFFSET_MAX = 0.25  # the texture offset's bound (tanh)
POOLS = ("mean", "flatten")


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=[
    "mano",
    "tex_offset",
    "tex_mu",
    "tex_logvar",
    "light",
    "proj",
    "feature",
    "log_heatmap",
  ],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class NetOutput:
  mano: mano_head.ManoParams
  tex_offset: jax.Array
  tex_mu: jax.Array
  tex_logvar: jax.Array
  light: jax.Array
  proj: jax.Array
  feature: jax.Array
  log_heatmap: jax.Array | None = None


class TextureVAE(nn.Module):
  latent: int = 16
  resolution: int = 32

  @nn.compact
  def __call__(self, feature):
    stats = nn.Dense(2 * self.latent, name="encoder")(feature)
    mu, logvar = stats[..., : self.latent], jnp.clip(stats[..., self.latent :], -8.0, 4.0)
    if self.has_rng("texture"):
      eps = jax.random.normal(self.make_rng("texture"), mu.shape, mu.dtype)
      z = mu + jnp.exp(0.5 * logvar) * eps
    else:
      z = mu
    r0 = max(self.resolution // 4, 1)
    x = nn.gelu(nn.Dense(r0 * r0 * 32, name="decoder_in")(z)).reshape(z.shape[:-1] + (r0, r0, 32))
    x = nn.gelu(nn.ConvTranspose(16, (4, 4), strides=(2, 2), name="up1")(x))
    x = nn.ConvTranspose(3, (4, 4), strides=(2, 2), kernel_init=nn.initializers.zeros, name="up2")(
      x
    )
    return OFFSET_MAX * jnp.tanh(x), mu, logvar


class HandPoseNet(nn.Module):
  backbone_depth: int = 18
  backbone_width: int = 64
  feature_dim: int = 256
  hidden: int = 256
  num_betas: int = 10
  iterations: int = 3
  texture_latent: int = 16
  texture_resolution: int = 32
  proj_dim: int = 64
  pool: str = "mean"  # "mean" (HMR: global average) or "flatten" (the map kept, see below)
  pool_stride: int = 32  # the backbone map's stride
  pool_channels: int = 16  # "flatten": channels per map cell
  stem_stride: int = 4  # `models.resnet`: 2 keeps twice the resolution (small crops)
  keypoints: bool = False  # the 2D keypoint head (see above)
  keypoint_stride: int = 4
  keypoint_channels: int = 16  # per joint, of its heatmap-weighted feature

  @nn.compact
  def __call__(self, images) -> NetOutput:
    if self.pool not in POOLS:
      raise ValueError(f"config model.pool '{self.pool}': one of {POOLS}")
    stride = min(self.pool_stride, self.keypoint_stride) if self.keypoints else self.pool_stride
    fmap = resnet.ResNet(
      depth=self.backbone_depth,
      width=self.backbone_width,
      out_stride=stride,
      features=self.feature_dim,
      stem_stride=self.stem_stride,
      name="backbone",
    )(images)
    n = fmap.shape[0]
    log_heatmap, read = None, []
    if self.keypoints:
      logits = nn.Conv(heatmaps.NUM_KEYPOINTS, (1, 1), name="heatmap")(fmap)
      log_heatmap, uv, joint_feat = heatmaps.read(logits, fmap)
      joint_feat = nn.Dense(self.keypoint_channels, name="keypoint_proj")(joint_feat)
      read = [uv.reshape(n, -1), joint_feat.reshape(n, -1)]
      if self.pool_stride > stride:
        r = self.pool_stride // stride
        fmap = nn.avg_pool(fmap, (r, r), (r, r))
    if self.pool == "mean":
      pooled = jnp.mean(fmap, axis=(1, 2))
    else:  # where each part of the hand lies survives: the cells stay apart
      cells = nn.Conv(self.pool_channels, (1, 1), name="pool_proj")(fmap)
      pooled = cells.reshape(n, -1)
    pooled = jnp.concatenate([pooled, *read], -1)
    feature = nn.gelu(nn.Dense(self.feature_dim, name="global")(pooled))
    head = mano_head.ManoHead(
      self.hidden, self.num_betas, global_orient=True, camera=True, name="regressor"
    )
    est = mano_head.ManoParams(
      rot6d_delta=jnp.zeros((n, 16, 6), feature.dtype),
      betas=jnp.zeros((n, self.num_betas), feature.dtype),
      camera=jnp.zeros((n, 3), feature.dtype),
    )
    for _ in range(self.iterations):
      flat = jnp.concatenate([est.rot6d_delta.reshape(n, -1), est.betas, est.camera], -1)
      delta = head(jnp.concatenate([feature, flat], -1))
      est = jax.tree.map(jnp.add, est, delta)
    tex_offset, mu, logvar = TextureVAE(
      self.texture_latent, self.texture_resolution, name="texture"
    )(feature)
    light = nn.Dense(5, kernel_init=nn.initializers.zeros, name="light")(feature)
    p = nn.Dense(self.proj_dim, name="proj_out")(
      nn.relu(nn.Dense(self.feature_dim, name="proj_hidden")(feature))
    )
    proj = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-6)
    return NetOutput(est, tex_offset, mu, logvar, light, proj, feature, log_heatmap)


def light_from_raw(raw, root_cam):
  """raw [..., 5] light head output, root_cam [..., 3] -> (ambient [...], diffuse [...],
  position [..., 3] camera frame): a point light `LIGHT_DISTANCE_M` from the hand's root."""
  a0, d0 = LIGHT_INIT
  ambient = jax.nn.sigmoid(raw[..., 0] + np.log(a0 / (1 - a0)))
  diffuse = jax.nn.softplus(raw[..., 1] + np.log(np.expm1(d0)))
  direction = raw[..., 2:] + LIGHT_DIRECTION
  direction = direction / jnp.maximum(jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-6)
  return ambient, diffuse, root_cam + LIGHT_DISTANCE_M * direction
