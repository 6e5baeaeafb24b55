"""UST-Hand's objective as named terms (weights `config.loss.<name>`, each logged as loss/<name>).

Shapes: b clips, t frames, v views, 21 joints; positions `u` in crop units ([0, 1] of the crop;
pixels / size), so a term does not scale with the crop. Label weights `w_pl [b, t, v, 21]` are
the pseudo-labels' confidences times the clip mask: a missing detection (confidence 0) and a
padded clip (mask 0) count for nothing, and may hold any value (`losses.weighted_mean`).

- heatmap: stage 1's heatmaps against Gaussians at the pseudo-labels (dense early signal);
- nll: the flow's negative log-likelihood of the pseudo-labels (nats per joint);
- reproj / reproj_refined: robust distance between the pseudo-labels and the projections of the
  final (MANO) keypoints / of stage 2's refined joints (which the mesh is placed on);
- to_fused: stage 1's mode mu pulled towards the fused result's projection (views learn from the
  consensus; no gradient into the fusion);
- to_views: the fused projection pulled towards mu, each view weighted by stage 1's relative
  certainty (min sigma over views / sigma: 1 for the surest view; no gradient into stage 1);
- shape, pose, limits: hand priors on the head's outputs (`hand.priors`), per frame;
- smooth: acceleration of the keypoints (canonical units) over frames;
- bones: variance of bone lengths within a clip.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from handflow.geometry import cameras
from handflow.hand import priors
from handflow.methods import losses
from handflow.models import point_cloud

NAMES = (
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


def to_views(u_proj, mu, certainty, mask4):
  """The fused projection towards mu (held fixed), weighted by certainty [b, t, v, 21] -> []."""
  sg = jax.lax.stop_gradient
  return losses.weighted_mean(losses.smooth_l1(u_proj - sg(mu)), sg(certainty) * mask4)


def terms(out, batch, log_density, axes) -> dict:
  """Every term of NAMES for one forward pass `out` (`methods.ust.Forward`)."""
  size = out.size
  mask = batch["mask"]
  u_pl = batch["uv_pl"] / size
  w_pl = batch["conf"] * mask[:, None, None, None]
  m4 = mask[:, None, None, None]
  frame_w = mask[:, None]
  proj = project(batch, out.joints, size)
  kp = out.joints / point_cloud.NORM_M
  smooth = priors.acceleration(kp)  # [b, t - 2]: nothing to smooth below three frames
  zero = jnp.zeros((), kp.dtype)
  return {
    "heatmap": losses.weighted_mean(losses.heatmap_cross_entropy(out.log_heatmap, u_pl), w_pl),
    "nll": losses.weighted_mean(-log_density(out, u_pl), w_pl),
    "reproj_refined": reprojection(project(batch, out.refined, size), u_pl, w_pl),
    "reproj": reprojection(proj, u_pl, w_pl),
    "to_fused": to_fused(out.mu, proj, m4),
    "to_views": to_views(proj, out.mu, out.certainty, m4),
    "shape": losses.weighted_mean(priors.shape(out.mano.betas), frame_w),
    "pose": losses.weighted_mean(priors.pose(out.mano.rot6d_delta), frame_w),
    "limits": losses.weighted_mean(priors.limits(out.rotmats[:, :, 1:], axes), frame_w),
    "smooth": losses.weighted_mean(smooth, frame_w[:, :1]) if smooth.shape[1] else zero,
    "bones": losses.weighted_mean(priors.bone_variance(kp), mask),
  }
