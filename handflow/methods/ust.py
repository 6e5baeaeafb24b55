"""UST-Hand: self-supervised 3D hand pose and mesh from multi-view video and 2D pseudo-labels.

One forward pass over a batch of clips (b clips, t frames, v views; REFERENCE §4) -> `Forward`:
1. Per image (`models.hypothesis_net.HypothesisNet`): coarse 2D mu, scale sigma and joint
   features h; the conditional flow's K hypotheses per joint per view (vmap over keys) plus its
   mode.
2. The probabilistic point cloud (`models.point_cloud.build`): per joint and frame the robustly
   triangulated mode, the most consistent view-pair points and the K samples (triangulated
   with the mode's robust view weights), in the canonical frame fixed by the mode's palm. Each
   point is scored by its multi-view likelihood (`UST.score`); features include that score,
   the distance from the views' modes, the joint's spread and image features sampled at the
   projections (`models.sampling`). The point positions are inputs (no gradient flows back
   into the hypotheses through them).
3. Per clip (`models.point_mesh_net.PointMeshNet`): the spatiotemporal point transformer, a
   fusion logit per point and the shared MANO head (one shape per clip); the cloud is fused by
   softmax(logit + score) and refined by an offset; the hand kernel gives vertices and 21
   keypoints, placed in the world by a rigid fit to the refined joints
   (`models.mano_head.place_rigid`; `model.placement="similarity"` for a free scale).

The objective is `ust_losses` (named terms, weights `config.loss.*`). No ground truth is read
in training: only images, cameras, pseudo-labels and confidences. UST-Hand keeps no extra
state (`extra = {}`); parameters are labelled "hypothesis_net" and "point_mesh_net".
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.geometry import cameras
from handflow.hand import conventions, limits
from handflow.methods import base, losses, ust_losses
from handflow.models import flow, hypothesis_net, mano_head, point_cloud, point_mesh_net, sampling

LOSS_TERMS = ust_losses.NAMES
# 2D heads: the flow's density; a Laplace density around mu with a learned scale (one point
# per joint); plain L1 (the Laplace density with its scale held at L1_SCALE).
HEADS = ("flow", "laplace", "l1")
L1_SCALE = 0.02  # crop units


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=[
    "mu", "sigma", "fmap", "log_heatmap", "flow_ctx", "flow_weights", "hyp", "log_lik",
    "points", "valid", "frame", "refined", "mano",
    "joints", "vertices", "rotmats", "scale", "score", "fuse_w",
  ],
  meta_fields=["size"],
)  # fmt: skip
@dataclasses.dataclass(frozen=True)
class Forward:
  """Everything the losses and predictions need. Positions in crop units unless said; world
  frame (the cameras' `T_cam_world`), metres."""

  size: int  # crop side, pixels
  mu: jax.Array  # [b, t, v, 21, 2] stage-1 soft-argmax
  sigma: jax.Array  # [b, t, v, 21, 2] per-coordinate scale
  fmap: jax.Array  # [b t v, h, w, c] feature map
  log_heatmap: jax.Array  # [b t v, h, w, 21] log-probabilities over positions
  flow_ctx: jax.Array | None  # the flow's per-joint context (None: deterministic head)
  flow_weights: object
  hyp: jax.Array  # [b, t, v, 21, s, 2] the mode first, then K samples
  log_lik: jax.Array  # [b, t, v, 21, s] their log-densities (per crop unit^2)
  points: jax.Array  # [b, t, 21, s, 3] the cloud (robust mode, view pairs, samples), world
  valid: jax.Array  # [b, t, 21, s] bool
  frame: tuple  # canonical frame: (scale [b, t], R_world_hand [b, t, 3, 3], root [b, t, 3])
  refined: jax.Array  # [b, t, 21, 3] modes moved by the transformer, world
  mano: mano_head.ManoParams  # head outputs [b, t]
  joints: jax.Array  # [b, t, 21, 3] the placed hand's keypoints, world
  vertices: jax.Array  # [b, t, n, 3] world
  rotmats: jax.Array  # [b, t, 16, 3, 3] world orientation first, then the 15 local rotations
  scale: jax.Array  # [b, t] the placement's scale (1 for the rigid placement)
  score: jax.Array  # [b, t, 21, s] each point's multi-view likelihood (nats)
  fuse_w: jax.Array  # [b, t, 21, s] the fusion's weights


def _float32(tree):
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


class UST(base.MethodBase):
  name = "ust"
  title = "UST-Hand"
  report_labels = {
    "refined/": "stage-2 refined joints, trained",
    "stage1/": "stage-1 modes triangulated robustly, trained",
  }

  def __init__(self, config):
    m = config.model
    self.model = hand.load(config.hand.model, config.hand.side)
    self.convention = config.hand.convention
    self.k = int(m.num_hypotheses)
    if self.k < 1:
      raise ValueError(f"config model.num_hypotheses = {self.k}: UST-Hand needs at least 1")
    if int(config.data.views) < 2:
      raise ValueError(
        f"config data.views = {config.data.views}: UST-Hand triangulates, so it needs at least "
        "2 views"
      )
    self.head = m.get("head", "flow")
    if self.head not in HEADS:
      raise ValueError(f"config model.head='{self.head}': one of {list(HEADS)}")
    self.use_flow = self.head == "flow"
    # False: stage 2 reads stage 1's features without training them (stage 1 learns from the
    # pseudo-labels and the consistency terms only).
    self.feature_grad = bool(m.get("feature_grad", True))
    self.pairs = int(m.get("pair_points", 4))
    placement = m.get("placement", "rigid")
    if placement not in ("rigid", "similarity"):
      raise ValueError(f"config model.placement='{placement}': 'rigid' or 'similarity'")
    self.place = mano_head.place_rigid if placement == "rigid" else mano_head.place_by_similarity
    self.weights = {name: float(config.loss[name]) for name in LOSS_TERMS}
    self.agreement = ust_losses.Agreement(
      scale=float(config.loss.get("agree_scale", 0.05)),
      warmup=int(config.loss.get("agree_warmup", 0)),
    )
    self.hypothesis_net = hypothesis_net.HypothesisNet(
      depth=m.backbone_depth,
      width=m.backbone_width,
      stride=m.feature_stride,
      features=m.feature_dim,
      joint_dim=m.joint_dim,
      use_flow=self.use_flow,
      flow_layers=m.flow_layers,
      flow_hidden=m.flow_hidden,
    )
    self.point_mesh_net = point_mesh_net.PointMeshNet(
      dim=m.point_dim,
      spatial_layers=m.spatial_layers,
      joint_layers=m.joint_layers,
      heads=m.heads,
      temporal=bool(m.temporal_attention),
      num_betas=self.model.num_betas,
    )
    rest = hand.forward(self.model, jnp.zeros((45,), jnp.float32))
    self.template = np.asarray(
      conventions.keypoints(self.model, rest.vertices, rest.joints, self.convention)
    )
    self.axes = limits.joint_axes(self.model)

  # ---------------------------------------------------------------------------------------
  def init(self, rng, batch):
    r1, r2 = jax.random.split(rng)
    img = batch["images"]
    p1 = self.hypothesis_net.init(r1, img.reshape((-1,) + img.shape[-3:])[:1])
    t, v = img.shape[1:3]
    s = (self.k if self.use_flow else 0) + 1 + min(self.pairs, v * (v - 1) // 2)
    c = self.hypothesis_net.features
    z = lambda *shape: jnp.zeros(shape, jnp.float32)
    geom = z(1, t, 21, s, point_cloud.GEOM_FEATURES)
    p2 = self.point_mesh_net.init(r2, geom, z(1, t, 21, s, c), jnp.ones((1, t, 21, s), bool))
    return {"hypothesis_net": p1, "point_mesh_net": p2}, {}

  def compute_inputs(self, batch, dtype):
    """bfloat16 (TPU): the images only; cameras and labels feed the geometry in float32."""
    return dict(batch, images=batch["images"].astype(dtype))

  def hypotheses(self, params, batch, rng, k):
    """Per-image outputs and hypotheses (crop units), shapes [b, t, v, 21, ...]."""
    img = batch["images"]
    b, t, v, size = img.shape[:4]
    s1 = self.hypothesis_net.apply(params["hypothesis_net"], img.reshape((-1,) + img.shape[-3:]))
    s1 = _float32(s1)  # bfloat16 networks (TPU): densities and geometry stay float32
    lead = (b, t, v, 21)
    mu, sigma = s1["mu"].reshape(lead + (2,)), s1["sigma"].reshape(lead + (2,))
    if self.head == "l1":
      sigma = jnp.full_like(sigma, L1_SCALE)
    log_sigma = jnp.sum(jnp.log(sigma), -1)
    out = dict(size=size, mu=mu, sigma=sigma, fmap=s1["fmap"], log_heatmap=s1["log_heatmap"])
    if self.use_flow:
      dist = flow.distribution(s1["flow_ctx"], s1["flow_weights"])  # batch [b t v, 21]
      x_mode, lp_mode = flow.mode(dist)
      x, lp = flow.sample(dist, rng, k)  # [k, n, 21, 2]
      x = jnp.concatenate([x_mode[None], x], 0)
      lp = jnp.concatenate([lp_mode[None], lp], 0)
      hyp = mu[..., None, :] + sigma[..., None, :] * jnp.moveaxis(x, 0, -2).reshape(
        lead + (k + 1, 2)
      )
      log_lik = jnp.moveaxis(lp, 0, -1).reshape(lead + (k + 1,)) - log_sigma[..., None]
      out.update(flow_ctx=s1["flow_ctx"], flow_weights=s1["flow_weights"])
    else:  # a deterministic head: a Laplace density around mu, one point (its mode)
      hyp = mu[..., None, :]
      log_lik = (-jnp.sum(jnp.log(2.0 * sigma), -1))[..., None]
      out.update(flow_ctx=None, flow_weights=None)
    return dict(out, hyp=hyp, log_lik=log_lik)

  def log_density(self, out: Forward, u):
    """log p(u | image) [b, t, v, 21] of positions u [b, t, v, 21, 2] (crop units)."""
    return self.density_at(out.mu, out.sigma, out.flow_ctx, out.flow_weights, u)

  def density_at(self, mu, sigma, flow_ctx, flow_weights, u):
    """The same from the per-image outputs: mu, sigma [b, t, v, 21, 2] and the flow's context."""
    r = (u - mu) / sigma
    log_sigma = jnp.sum(jnp.log(sigma), -1)
    if self.use_flow:
      dist = flow.distribution(flow_ctx, flow_weights)
      return dist.log_prob(r.reshape((-1, 21, 2))).reshape(r.shape[:-1]) - log_sigma
    return -jnp.sum(jnp.abs(r), -1) - jnp.sum(jnp.log(2.0 * sigma), -1)

  def forward(self, params, batch, rng, k=None) -> Forward:
    k = self.k if k is None else k
    s1 = self.hypotheses(params, batch, rng, k)
    size = s1["size"]
    b, t, v = s1["mu"].shape[:3]
    P = cameras.projection_matrix(batch["K"], batch["T_cam_world"])
    sig = jnp.mean(s1["sigma"], -1)
    certainty = jnp.min(sig, axis=2, keepdims=True) / sig  # [b, t, v, 21] in (0, 1]
    sg = jax.lax.stop_gradient
    x, valid, view_w, err = point_cloud.build(
      sg(P), sg(s1["hyp"] * size), sg(certainty), pairs=self.pairs, size=size
    )
    frame = tuple(sg(f) for f in point_cloud.canonical_frame(x[..., 0, :], self.template))
    s = x.shape[-2]
    # Every point's projection in every view: its multi-view likelihood and image features.
    pts = x.reshape(b, t, 1, 21 * s, 3)
    uv = cameras.world_to_image(batch["K"], batch["T_cam_world"], pts)[0] / size
    uv = sg(uv).reshape(b, t, v, 21, s, 2)
    score = self.score(s1, uv, certainty)  # [b, t, 21, s]
    fmap = s1["fmap"] if self.feature_grad else sg(s1["fmap"])
    sampled = sampling.bilinear_sample(fmap, uv.reshape(b * t * v, 21 * s, 2))
    sampled = sampled.reshape(b, t, v, 21, s, -1)
    kind = point_cloud.kinds(s - s1["hyp"].shape[-2], s1["hyp"].shape[-2] - 1)
    geom, img = point_cloud.features(x, valid, kind, err, score, frame, sampled, view_w, size)
    logits, offset, mano = _float32(
      self.point_mesh_net.apply(params["point_mesh_net"], geom, img, valid)
    )
    # The cloud's answer: its points averaged with softmax(learned logit + likelihood score);
    # the transformer then moves it by an offset. The articulated hand is placed on these
    # refined joints by the best rigid fit over all 21 keypoints: a rotation fitted to many
    # points is steadier than one regressed, and the head only articulates and sizes the hand.
    xc = point_cloud.to_canonical(x, *frame)
    fused_c, fuse_w = point_cloud.fuse(xc, valid, logits + score)
    refined = point_cloud.from_canonical(fused_c + offset, *frame)
    verts, kp, R = mano_head.articulate(self.model, mano.rot6d_delta, mano.betas, self.convention)
    joints, vertices, scale, R_world = self.place(kp, verts, sg(refined))
    rotmats = jnp.concatenate([R_world[:, :, None], R[:, :, 1:]], axis=2)
    return Forward(
      points=x, valid=valid, frame=frame, refined=refined, mano=mano, joints=joints,
      vertices=vertices, rotmats=rotmats, scale=scale, score=score, fuse_w=fuse_w, **s1,
    )  # fmt: skip

  def score(self, s1, uv, w):
    """Multi-view likelihood of every point [b, t, 21, s] (nats, <= 0 up to the flow's mode
    search): the mean over views, weighted by w [b, t, v, 21], of log p_v(pi_v(X)) - log
    p_v(mode_v), each clipped at -SCORE_CLIP. uv [b, t, v, 21, s, 2] crop units. No gradient."""
    sg = jax.lax.stop_gradient
    args = [sg(s1[key]) for key in ("mu", "sigma", "flow_ctx", "flow_weights")]
    lp = jax.vmap(lambda u: self.density_at(*args, u), in_axes=-2, out_axes=-1)(uv)
    rel = lp - sg(s1["log_lik"][..., :1])
    rel = jnp.clip(rel, -point_cloud.SCORE_CLIP, 0.0)
    wn = sg(w / jnp.maximum(jnp.sum(w, axis=2, keepdims=True), 1e-9))[..., None]
    return jnp.sum(rel * wn, axis=2)

  # ---------------------------------------------------------------------------------------
  def loss_fn(self, params, extra, batch, rng, step):
    del extra
    out = self.forward(params, batch, rng)
    terms, metrics = ust_losses.terms(out, batch, self.log_density, self.axes, self.agreement, step)
    loss = sum(self.weights[n] * terms[n] for n in LOSS_TERMS)
    metrics.update({f"loss/{n}": terms[n] for n in LOSS_TERMS})
    size = out.size
    w_pl = batch["conf"] * batch["mask"][:, None, None, None]
    proj = ust_losses.project(batch, out.joints, size) * size
    metrics["reproj_px"] = losses.weighted_mean(
      jnp.linalg.norm(proj - batch["uv_pl"], axis=-1), w_pl
    )
    m4 = jnp.broadcast_to(batch["mask"][:, None, None, None], out.mu.shape[:-1])
    metrics["sigma_px"] = losses.weighted_mean(jnp.mean(out.sigma, -1) * size, m4)
    return loss, (metrics, None)

  # ---------------------------------------------------------------------------------------
  def predict(self, params, extra, batch, rng=None, k=None):
    """World keypoints and mesh (metres); stage 2's refined joints and the robustly
    triangulated stage-1 modes; per view the soft-argmax mu, the flow's mode and hypotheses
    (crop pixels) with the hypotheses' log-densities; the 3D point cloud with its fusion
    weights; a per-joint uncertainty of the final keypoints (their predicted RMS error, metres:
    `uncertainty`); and each pseudo-label's weight in the
    3D fit once the agreement re-weighting is fully on (`label_weight [b, t, v, 21]`)."""
    del extra
    rng = jax.random.key(0) if rng is None else rng
    out = self.forward(params, batch, rng, k)
    size = out.size
    return dict(
      joints=out.joints,
      vertices=out.vertices,
      refined_joints=out.refined,
      stage1_joints=out.points[..., 0, :],
      uv_mu=out.mu * size,
      uv_mode=out.hyp[..., 0, :] * size,
      uv_hypotheses=out.hyp[..., 1:, :] * size,
      uv_log_lik=out.log_lik[..., 1:],
      points=out.points,
      points_valid=out.valid,
      points_weight=out.fuse_w,
      uncertainty=self.uncertainty(out),
      label_weight=self.agreement.weights(out, batch, None),
    )

  @staticmethod
  def uncertainty(out: Forward):
    """Predicted RMS error of the final keypoints [b, t, 21] (metres): the cloud's spread
    around them under the fusion weights, and how far the three estimates of each joint
    disagree (the hand's keypoints, stage 2's refined joints, the robust stage-1 mode). The
    spread alone misses the errors every hypothesis shares; the disagreement measures them.
    Chosen on the validation split (50% / 90% coverage 0.55 / 0.90 there, against 0.18 / 0.55
    for the spread alone; `calibration` evaluator)."""
    spread, _ = point_cloud.spread(out.points, out.valid, out.fuse_w, out.joints)
    d_mode = jnp.sum((out.joints - out.points[..., 0, :]) ** 2, -1)
    d_refined = jnp.sum((out.joints - out.refined) ** 2, -1)
    return jnp.sqrt(spread**2 + d_mode + d_refined)

  def uv_log_density(self, params, extra, batch, uv_px):
    """log p(uv | image) [b, t, v, 21] of crop-pixel positions uv [b, t, v, 21, 2]."""
    del extra
    s1 = self.hypotheses(params, batch, jax.random.key(0), 1)
    args = (s1["mu"], s1["sigma"], s1["flow_ctx"], s1["flow_weights"])
    return self.density_at(*args, uv_px / s1["size"])
