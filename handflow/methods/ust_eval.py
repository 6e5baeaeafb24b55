"""UST-Hand's evaluation statistics: what the trained model, its stage 1 and the teacher reach.

Per evaluation batch (exact, mask-aware `metrics.Stats`; summed over batches and hosts):
- `hanco/*`, `rootrel/*`: the final keypoints and mesh in the HanCo protocol (scale and root at
  the middle MCP, HaMuCo's) and plain root-relative; MPJPE, MPVPE, PA-MPJPE, PA-MPVPE (mm).
  MPVPE needs ground-truth meshes (`verts`) and a predicted mesh with the same vertices;
- `stage1/*`: the triangulated stage-1 modes (keypoints only) - what stage 2 adds;
- `refined/*`: stage 2's refined joints (the modes moved by the transformer; keypoints only);
- `teacher/*`: robust triangulation of the pseudo-labels weighted by their confidences - the
  labels training learns from;
- `calib/{2d,3d}_{50,90}`: how often the ground truth lies inside the hypotheses' 50% / 90%
  regions (ideal: 0.5 / 0.9). 2D: the flow's highest-density region, thresholded at the
  quantile of the K samples' log-densities; 3D: the ball around the hypothesis points' mean
  whose radius is the quantile of their distances;
- `stage1/uv_err_px`, `teacher/uv_err_px`: 2D errors against the ground truth in crop pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from handflow.eval import metrics, protocols
from handflow.geometry import cameras, triangulation
from handflow.models import point_cloud

PROTOCOLS = ("hanco", "rootrel")
LEVELS = (0.5, 0.9)


def teacher_joints(batch):
  """The pseudo-labels, robustly triangulated with their confidences: [b, t, 21, 3] world."""
  P = cameras.projection_matrix(batch["K"], batch["T_cam_world"])
  uv = jnp.moveaxis(batch["uv_pl"], 2, -2)  # [b, t, 21, v, 2]
  conf = jnp.moveaxis(batch["conf"], 2, -1)
  x, _, _ = triangulation.triangulate_robust(P[:, :, None], uv, conf)
  return x


def stats(method, params, batch) -> metrics.Stats:
  out = method.forward(params, batch, jax.random.key(0))
  b, t = batch["images"].shape[:2]
  flat = lambda x: x.reshape((b * t,) + x.shape[2:])
  gt_j = flat(batch["xyz"])
  gt_v = flat(batch["verts"]) if "verts" in batch else None
  if gt_v is not None and gt_v.shape[-2] != out["vertices"].shape[-2]:
    gt_v = None  # e.g. MANO ground truth for a model with the open hand: no MPVPE
  dists, scores, point_masks = {}, {}, {}

  def add(prefix, pred_j, pred_v=None):
    for name in PROTOCOLS:
      p = protocols.get(name)
      d, s = protocols.sample_metrics(p, pred_j, gt_j, pred_v, None if pred_v is None else gt_v)
      dists.update({f"{prefix}{name}/{k}": v for k, v in d.items()})
      scores.update({f"{prefix}{name}/{k}": v for k, v in s.items()})
      if pred_v is not None and "has_verts" in batch:  # real data: frames without a mesh fit
        has = flat(batch["has_verts"])[:, None]
        for k, _ in p.vertices:
          point_masks[f"{prefix}{name}/{k}"] = jnp.broadcast_to(has, d[k].shape)

  add("", flat(out["joints"]), None if gt_v is None else flat(out["vertices"]))
  add("refined/", flat(out["refined"]))
  add("stage1/", flat(out["points"][..., 0, :]))
  add("teacher/", flat(teacher_joints(batch)))

  s1 = out["s1"]
  size = s1["size"]
  err = jnp.linalg.norm(s1["mu"] * size - batch["uv"], axis=-1)
  scores["stage1/uv_err_px"] = flat(jnp.mean(err, axis=(2, 3)))
  det = (batch["conf"] > 0).astype(err.dtype)
  t_err = jnp.linalg.norm(batch["uv_pl"] - batch["uv"], axis=-1) * det
  scores["teacher/uv_err_px"] = flat(jnp.sum(t_err, (2, 3)) / jnp.maximum(jnp.sum(det, (2, 3)), 1))
  if method.use_flow:
    scores.update(calibration(method, out, batch, flat))
  return metrics.batch_stats(dists, scores, jnp.repeat(batch["mask"], t), point_masks)


def calibration(method, out, batch, flat):
  """Per-frame coverage fractions {calib/...: [b * t]} of the 2D and 3D hypothesis regions."""
  s1 = out["s1"]
  res = {}
  lp_gt = method.log_density(s1, batch["uv"] / s1["size"])  # [b, t, v, 21]
  lp_samples = s1["log_lik"][..., 1:]  # the K samples (index 0 is the mode)
  hyp, valid = out["points"][..., 1:, :], out["valid"][..., 1:]
  _, centre = point_cloud.spread(hyp, valid)
  d = jnp.linalg.norm(hyp - centre[..., None, :], axis=-1)
  d_gt = jnp.linalg.norm(batch["xyz"] - centre, axis=-1)  # [b, t, 21]
  for level in LEVELS:
    q2 = jnp.quantile(lp_samples, 1.0 - level, axis=-1)
    res[f"calib/2d_{round(level * 100)}"] = flat(jnp.mean(lp_gt >= q2, axis=(2, 3)))
    r3 = jnp.nanquantile(jnp.where(valid, d, jnp.nan), level, axis=-1)
    inside = jnp.where(jnp.isfinite(r3), d_gt <= r3, False)
    res[f"calib/3d_{round(level * 100)}"] = flat(jnp.mean(inside, axis=-1))
  return {k: v.astype(jnp.float32) for k, v in res.items()}
