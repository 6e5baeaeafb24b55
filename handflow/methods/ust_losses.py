"""UST-Hand's objective as named terms (weights `config.loss.<name>`, each logged as loss/<name>).

Shapes: b clips, t frames, v views, 21 joints; positions `u` in crop units ([0, 1] of the crop;
pixels / size), so a term does not scale with the crop. Every label weight is times the clip
mask (a padded clip counts for nothing) and is 0 where the detector found nothing (confidence 0),
whose positions may hold any value (`losses.weighted_mean`). Three weightings of the labels:

- the flow learns the detector as it is, failures included: the NLL weights every detection
  alike (confidence-weighting would hide the confident and the unconfident failures from the
  density that exists to model them);
- stage 1's heatmaps and the 3D fit use the **agreement weights** (`Agreement`): confidence
  times, after a warm-up, a Cauchy weight of the label's distance from the projection of a
  robust fusion of labels and model (no gradient through the weight), so that labels the other
  views out-vote stop pulling;
- terms:
  - heatmap: stage 1's heatmaps against Gaussians at the pseudo-labels (dense early signal);
  - nll: the flow's negative log-likelihood of the pseudo-labels (nats per joint);
  - reproj / reproj_refined: robust distance between the labels and the projections of the
    final (MANO) keypoints / of stage 2's refined joints (which the mesh is placed on);
  - to_fused: stage 1's mode mu pulled towards the fused result's projection (views learn from
    the consensus; no gradient into the fusion). Nothing pulls the output towards stage 1's
    per-view answers: that would undo the fusion's out-voting;
  - shape, pose, limits: hand priors on the head's outputs (`hand.priors`; one shape per clip);
  - smooth: acceleration of the keypoints (canonical units) over frames;
  - bones: variance of bone lengths within a clip.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from handflow.geometry import cameras
from handflow.hand import priors
from handflow.methods import losses, teacher
from handflow.models import point_cloud

NAMES = (
  "heatmap",
  "nll",
  "reproj_refined",
  "reproj",
  "to_fused",
  "shape",
  "pose",
  "limits",
  "smooth",
  "bones",
)


def project(batch, x_world, size):
  """x_world [b, t, 21, 3] -> positions in every view [b, t, v, 21, 2], crop units."""
  uv, _ = cameras.world_to_image(batch["K"], batch["T_cam_world"], x_world[:, :, None])
  return uv / size


def reprojection(u_proj, u_pl, w_pl):
  """Robust (smooth-L1) distance between projections and labels [b, t, v, 21, 2] -> []."""
  return losses.weighted_mean(losses.smooth_l1(u_proj - u_pl), w_pl)


def to_fused(mu, u_proj, mask4):
  """mu [b, t, v, 21, 2] towards the fused projection (held fixed) -> []."""
  return losses.weighted_mean(losses.smooth_l1(mu - jax.lax.stop_gradient(u_proj)), mask4)


@dataclasses.dataclass(frozen=True)
class Agreement:
  """Label weights for the 3D fit: confidence x (1 - a + a * Cauchy(d / scale)), a ramping
  0 -> 1 over `warmup` steps (0: on from the start), d the distance (crop units) between a
  label and the projection of a robust fusion of labels and model: the labels of every view
  triangulated robustly with their confidences (`methods.teacher.joints`: what the views agree
  on), and where fewer than two views detected a joint, the model's refined joints. No
  gradient flows through the weights."""

  scale: float = 0.05  # crop units
  warmup: int = 0

  def reference(self, out, batch):
    """The fused keypoints the labels are compared with [b, t, 21, 3] (world)."""
    x, valid = teacher.joints_and_valid(batch)
    return jax.lax.stop_gradient(jnp.where(valid[..., None], x, out.refined))

  def cauchy(self, out, batch):
    """[b, t, v, 21]: 1 where a label agrees with the fusion, -> 0 as it moves away."""
    u = project(batch, self.reference(out, batch), out.size)
    d2 = jnp.sum((u - batch["uv_pl"] / out.size) ** 2, -1)
    return 1.0 / (1.0 + d2 / self.scale**2)

  def weights(self, out, batch, step):
    """The labels' weights at `step` (None: fully on) [b, t, v, 21]."""
    if step is None or self.warmup <= 0:
      a = 1.0
    else:
      a = jnp.clip(step / self.warmup, 0.0, 1.0)
    w = batch["conf"] * batch["mask"][:, None, None, None]
    # Padded clips and missed detections (w = 0) may project to anything, NaN included.
    return jnp.where(w > 0, w * (1.0 - a + a * self.cauchy(out, batch)), 0.0)


def terms(out, batch, log_density, axes, agreement: Agreement, step) -> tuple[dict, dict]:
  """Every term of NAMES for one forward pass `out` (`methods.ust.Forward`) at `step`, and
  metrics about the labels' weights."""
  size = out.size
  mask = batch["mask"]
  u_pl = batch["uv_pl"] / size
  m4 = mask[:, None, None, None]
  detected = (batch["conf"] > 0).astype(u_pl.dtype) * m4
  w_fit = agreement.weights(out, batch, step)
  frame_w = mask[:, None]
  proj = project(batch, out.joints, size)
  kp = out.joints / point_cloud.NORM_M
  smooth = priors.acceleration(kp)  # [b, t - 2]: nothing to smooth below three frames
  zero = jnp.zeros((), kp.dtype)
  w_conf = batch["conf"] * m4
  metrics = {
    # The share of the labels' confidence the agreement weighting takes away.
    "labels/downweighted": 1.0 - jnp.sum(w_fit) / jnp.maximum(jnp.sum(w_conf), 1e-9),
  }
  terms = {
    "heatmap": losses.weighted_mean(losses.heatmap_cross_entropy(out.log_heatmap, u_pl), w_fit),
    "nll": losses.weighted_mean(-log_density(out, u_pl), detected),
    "reproj_refined": reprojection(project(batch, out.refined, size), u_pl, w_fit),
    "reproj": reprojection(proj, u_pl, w_fit),
    "to_fused": to_fused(out.mu, proj, m4),
    "shape": losses.weighted_mean(priors.shape(out.mano.betas), frame_w),
    "pose": losses.weighted_mean(priors.pose(out.mano.rot6d_delta), frame_w),
    "limits": losses.weighted_mean(priors.limits(out.rotmats[:, :, 1:], axes), frame_w),
    "smooth": losses.weighted_mean(smooth, frame_w[:, :1]) if smooth.shape[1] else zero,
    "bones": losses.weighted_mean(priors.bone_variance(kp), mask),
  }
  return terms, metrics
