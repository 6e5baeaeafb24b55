"""UST-Hand: self-supervised 3D hand pose and mesh from multi-view video and 2D pseudo-labels.

One forward pass over a batch of clips (b clips, t frames, v views; REFERENCE §4):
1. Stage 1 per image (`models.ust.Stage1`): coarse 2D mu, scale sigma and joint features h;
   the conditional flow's K hypotheses per joint per view (vmap over keys) plus its mode.
2. The probabilistic point cloud (`models.point_cloud`): hypotheses triangulated across the
   calibrated views, weighted by 1 / sigma, into s = K + 1 points per joint per frame, in the
   canonical frame fixed by the mode's palm; features include the hypotheses' likelihood, the
   reprojection error, the joint's spread and image features sampled at the projections.
   The point positions are inputs (no gradient flows back into the hypotheses through them).
3. Stage 2 (`models.ust.Stage2`): the spatiotemporal point transformer and the MANO head;
   the hand kernel gives vertices and 21 keypoints, placed in the world by the canonical frame.

Losses (weights `config.loss.*`, every term logged): flow NLL of the pseudo-labels (confidence
weighted); robust reprojection of the final keypoints onto the pseudo-labels in every view;
multi-view consistency both ways (stage-1 mu towards the fused projection, and the fused
projection towards mu weighted by stage 1's certainty); shape and pose priors; joint limits;
temporal smoothness (acceleration); bone lengths constant within a clip.

No ground truth is read in training: only images, cameras, pseudo-labels and confidences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.geometry import alignment, cameras
from handflow.hand import conventions, limits, rotations
from handflow.methods import losses, ust_eval
from handflow.models import flow, point_cloud
from handflow.models import ust as nets

BONES = tuple((p, c) for c, p in enumerate(conventions.OPENPOSE_PARENTS) if p >= 0)
LOSS_TERMS = (
  "heatmap",
  "nll",
  "reproj_refined",
  "reproj",
  "to_fused",
  "to_views",
  "shape",
  "pose",
  "limits",
  "smooth",
  "bones",
)
IDENTITY_6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)


class UST:
  name = "ust"

  def __init__(self, config):
    m = config.model
    self.model = hand.load(config.hand.model, config.hand.side)
    self.convention = config.hand.convention
    self.k = int(m.num_hypotheses)
    self.use_flow = bool(m.flow)
    # False: stage 2 reads stage 1's features without training them (stage 1 learns from the
    # pseudo-labels and the consistency terms only).
    self.feature_grad = bool(m.get("feature_grad", True))
    self.weights = {name: float(config.loss[name]) for name in LOSS_TERMS}
    self.stage1 = nets.Stage1(
      depth=m.backbone_depth,
      width=m.backbone_width,
      stride=m.feature_stride,
      features=m.feature_dim,
      joint_dim=m.joint_dim,
      use_flow=self.use_flow,
      flow_layers=m.flow_layers,
      flow_hidden=m.flow_hidden,
    )
    self.stage2 = nets.Stage2(
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
  def init_params(self, rng, batch):
    r1, r2 = jax.random.split(rng)
    img = batch["images"]
    p1 = self.stage1.init(r1, img.reshape((-1,) + img.shape[-3:])[:1])
    t = img.shape[1]
    s = self.k + 1 if self.use_flow else 1
    c = self.stage1.features
    z = lambda *shape: jnp.zeros(shape, jnp.float32)
    geom = z(1, t, 21, s, point_cloud.GEOM_FEATURES)
    p2 = self.stage2.init(r2, geom, z(1, t, 21, s, c), jnp.ones((1, t, 21, s), bool))
    return {"stage1": p1, "stage2": p2}

  def stage1_outputs(self, params, batch, rng, k):
    """Stage 1 and its hypotheses; positions in crop units, shapes [b, t, v, 21, ...]."""
    img = batch["images"]
    b, t, v, size = img.shape[:4]
    s1 = self.stage1.apply(params["stage1"], img.reshape((-1,) + img.shape[-3:]))
    lead = (b, t, v, 21)
    mu, sigma = s1["mu"].reshape(lead + (2,)), s1["sigma"].reshape(lead + (2,))
    log_sigma = jnp.sum(jnp.log(sigma), -1)
    out = dict(mu=mu, sigma=sigma, fmap=s1["fmap"], size=size, log_heatmap=s1["log_heatmap"])
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
      out.update(dist=dist)
    else:  # the deterministic head: a Laplace density around mu, one point (its mode)
      hyp = mu[..., None, :]
      log_lik = (-jnp.sum(jnp.log(2.0 * sigma), -1))[..., None]
    out.update(hyp=hyp, log_lik=log_lik)
    return out

  def log_density(self, s1, u):
    """log p(u | image) [b, t, v, 21] of positions u [b, t, v, 21, 2] (crop units)."""
    r = (u - s1["mu"]) / s1["sigma"]
    log_sigma = jnp.sum(jnp.log(s1["sigma"]), -1)
    if self.use_flow:
      return s1["dist"].log_prob(r.reshape((-1, 21, 2))).reshape(r.shape[:-1]) - log_sigma
    return -jnp.sum(jnp.abs(r), -1) - jnp.sum(jnp.log(2.0 * s1["sigma"]), -1)

  def forward(self, params, batch, rng, k=None):
    """Everything the losses, evaluation and predictions need (world frame, metres)."""
    k = self.k if k is None else k
    s1 = self.stage1_outputs(params, batch, rng, k)
    size = s1["size"]
    b, t, v = s1["mu"].shape[:3]
    P = cameras.projection_matrix(batch["K"], batch["T_cam_world"])
    sig = jnp.mean(s1["sigma"], -1)
    w = jnp.min(sig, axis=2, keepdims=True) / sig  # [b, t, v, 21] in (0, 1]
    sg = jax.lax.stop_gradient
    x, valid, err = point_cloud.triangulate_points(sg(P), sg(s1["hyp"] * size), sg(w))
    frame = tuple(sg(f) for f in point_cloud.canonical_frame(x[..., 0, :], self.template))
    s = x.shape[-2]
    # Image features at each point's projection in every view.
    pts = x.reshape(b, t, 1, 21 * s, 3)
    uv = (
      cameras.world_to_image(batch["K"], batch["T_cam_world"], pts)[0] / size
    )  # [b, t, v, 21 s, 2]
    fmap = s1["fmap"] if self.feature_grad else sg(s1["fmap"])
    sampled = point_cloud.bilinear_sample(fmap, sg(uv).reshape(b * t * v, 21 * s, 2))
    sampled = sampled.reshape(b, t, v, 21, s, -1)
    log_lik = jnp.mean(s1["log_lik"], axis=2)
    geom, img = point_cloud.features(x, valid, err, log_lik, frame, sampled, sg(w), size)
    head = self.stage2.apply(params["stage2"], geom, img, valid)
    # Refined joints: each mode moved by the transformer. The articulated hand is placed on
    # them by the best similarity over all 21 keypoints: a rotation fitted to many points is
    # steadier than one regressed, and the head only has to articulate the hand.
    mode_c = point_cloud.to_canonical(x[..., 0, :], *frame)
    refined = point_cloud.from_canonical(mode_c + head["joint_offset"], *frame)
    mesh = self._mano(head, sg(refined))
    return dict(
      s1=s1, points=x, valid=valid, frame=frame, refined=refined, head=head, P=P, w=w, **mesh
    )

  def _mano(self, head, target):
    """The hand articulated by the head (15 local rotations, shape), placed by the similarity
    (no reflection; no gradient through it) that best maps its keypoints onto `target`."""
    local = rotations.rot6d_to_matrix(IDENTITY_6D + head["rot6d_delta"])  # [b, t, 15, 3, 3]
    eye = jnp.broadcast_to(jnp.eye(3, dtype=local.dtype), local.shape[:2] + (1, 3, 3))
    out = hand.lbs(self.model, jnp.concatenate([eye, local], axis=2), head["betas"])
    kp = conventions.keypoints(self.model, out.vertices, out.joints, self.convention)
    s, R, t = (
      jax.lax.stop_gradient(a)
      for a in alignment.similarity_transform(kp, target, allow_reflection=False)
    )
    place = lambda p: alignment.apply_similarity(p, s, R, t)
    rotmats = jnp.concatenate([R[:, :, None], local], axis=2)  # world orientation first
    return dict(
      joints=place(kp), vertices=place(out.vertices), rotmats=rotmats, betas=head["betas"], scale=s
    )

  # ---------------------------------------------------------------------------------------
  def loss_fn(self, params, batch, rng):
    out = self.forward(params, batch, rng)
    s1 = out["s1"]
    size = s1["size"]
    mask = batch["mask"]
    u_pl = batch["uv_pl"] / size
    w_pl = batch["conf"] * mask[:, None, None, None]
    terms = {}
    terms["heatmap"] = losses.weighted_mean(heatmap_cross_entropy(s1["log_heatmap"], u_pl), w_pl)
    terms["nll"] = losses.weighted_mean(-self.log_density(s1, u_pl), w_pl)
    proj, _ = cameras.world_to_image(batch["K"], batch["T_cam_world"], out["joints"][:, :, None])
    proj = proj / size  # [b, t, v, 21, 2] crop units
    terms["reproj"] = losses.weighted_mean(losses.smooth_l1(proj - u_pl), w_pl)
    proj_r, _ = cameras.world_to_image(batch["K"], batch["T_cam_world"], out["refined"][:, :, None])
    terms["reproj_refined"] = losses.weighted_mean(losses.smooth_l1(proj_r / size - u_pl), w_pl)
    sg = jax.lax.stop_gradient
    m4 = jnp.broadcast_to(mask[:, None, None, None], proj.shape[:-1])
    terms["to_fused"] = losses.weighted_mean(losses.smooth_l1(s1["mu"] - sg(proj)), m4)
    terms["to_views"] = losses.weighted_mean(
      losses.smooth_l1(proj - sg(s1["mu"])), sg(out["w"]) * m4
    )
    mb = mask[:, None]
    terms["shape"] = losses.weighted_mean(jnp.mean(out["betas"] ** 2, -1), mb)
    local = out["rotmats"][:, :, 1:]
    terms["pose"] = losses.weighted_mean(jnp.mean(out["head"]["rot6d_delta"] ** 2, (-1, -2)), mb)
    aa = rotations.matrix_to_axis_angle(local)
    terms["limits"] = losses.weighted_mean(
      jnp.mean(limits.violation(aa, self.axes) ** 2, (-1, -2)), mb
    )
    kp = out["joints"] / point_cloud.NORM_M
    if kp.shape[1] >= 3:
      acc = kp[:, 2:] - 2 * kp[:, 1:-1] + kp[:, :-2]
      terms["smooth"] = losses.weighted_mean(jnp.mean(jnp.sum(acc**2, -1), -1), mb[:, :1])
    else:
      terms["smooth"] = jnp.zeros((), kp.dtype)
    parent, child = (np.array(a) for a in zip(*BONES, strict=True))
    d = kp[:, :, child] - kp[:, :, parent]
    bone = jnp.sqrt(jnp.sum(d * d, -1) + 1e-12)  # [b, t, 20]; finite gradient for padding
    terms["bones"] = losses.weighted_mean(jnp.mean(jnp.var(bone, axis=1), -1), mask)
    loss = sum(self.weights[n] * terms[n] for n in LOSS_TERMS)
    err_px = jnp.linalg.norm(proj - u_pl, axis=-1) * size
    metrics = {f"loss/{n}": terms[n] for n in LOSS_TERMS}
    metrics["reproj_px"] = losses.weighted_mean(err_px, w_pl)
    metrics["sigma_px"] = losses.weighted_mean(jnp.mean(s1["sigma"], -1) * size, m4)
    return loss, metrics

  # ---------------------------------------------------------------------------------------
  def predict(self, params, batch, rng=None, k=None):
    """Outputs for users: world keypoints and mesh (metres), the per-view 2D mode and
    hypotheses (crop pixels), the 3D point cloud and a per-joint uncertainty (the RMS distance
    of the joint's valid hypothesis points from their mean, metres)."""
    rng = jax.random.key(0) if rng is None else rng
    out = self.forward(params, batch, rng, k)
    size = out["s1"]["size"]
    return dict(
      joints=out["joints"],
      vertices=out["vertices"],
      uv_mode=out["s1"]["hyp"][..., 0, :] * size,
      uv_hypotheses=out["s1"]["hyp"][..., 1:, :] * size,
      points=out["points"],
      points_valid=out["valid"],
      uncertainty=point_cloud.spread(out["points"][..., 1:, :], out["valid"][..., 1:])[0],
    )

  def eval_stats(self, params, batch):
    return ust_eval.stats(self, params, batch)


def heatmap_cross_entropy(log_heatmap, u, std_cells: float = 1.0):
  """Cross-entropy of the heatmaps [n, h, w, 21] against Gaussians (std in feature cells) at
  positions u [b, t, v, 21, 2] (crop units) -> [b, t, v, 21]. A dense signal for every cell, so
  stage 1 finds the joints long before the NLL's gradient (scaled by 1 / sigma^2) takes over."""
  n, h, w, j = log_heatmap.shape
  gx = (jnp.arange(w) + 0.5) / w
  gy = (jnp.arange(h) + 0.5) / h
  uf = u.reshape(n, j, 2)
  dx = (gx[None, None, :] - uf[..., 0:1]) * w / std_cells  # [n, j, w]
  dy = (gy[None, None, :] - uf[..., 1:2]) * h / std_cells  # [n, j, h]
  target = jnp.exp(-0.5 * dy[..., :, None] ** 2) * jnp.exp(-0.5 * dx[..., None, :] ** 2)
  target = target / jnp.maximum(jnp.sum(target, (-1, -2), keepdims=True), 1e-12)
  ce = -jnp.einsum("njyx,nyxj->nj", target, log_heatmap)
  return ce.reshape(u.shape[:-1])
