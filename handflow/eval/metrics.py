"""Metrics of the field, as exact streaming statistics.

Per-sample quantities are plain jnp functions (jit-able, usable inside training):
- `point_errors(pred, gt)`: Euclidean distance per keypoint or vertex, [b, n] metres.
- `nearest_distances(a, b)`: distance from each point of a to its nearest point of b.
- `fscore(pred, gt, thresholds)`: F-score per sample (REFERENCE §2: both directions, strict <).

Dataset metrics are built from `Stats`, a pytree of sums that adds exactly across batches and
hosts, so that the result is the dataset's, not a mean of batch means, and padded samples
(mask 0) count for nothing:
- distance metrics keep, per keypoint, the sum of errors, the count and the PCK counts at
  `THRESHOLDS_M` (<=); `finalize` reports the mean error (mean over keypoints of each keypoint's
  mean, as the official FreiHAND/HO3D scorers do) in millimetres, and the AUC over 0-50 mm
  (trapezoid, normalised, averaged over keypoints);
- score metrics (F-scores) keep a sum and a count per metric.
The same code runs in float64 on the host (`jax.enable_x64`) for official numbers.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

THRESHOLDS_M = np.linspace(0.0, 0.05, 100)


def point_errors(pred, gt):
  """Euclidean distances [..., n] between pred and gt [..., n, 3]."""
  return jnp.sqrt(jnp.sum((pred - gt) ** 2, axis=-1))


def nearest_distances(a, b):
  """Nearest-neighbour distances both ways between a [..., n, 3] and b [..., m, 3].

  Returns (d_ab [..., n]: from each point of a to b, d_ba [..., m]: from each point of b to a).
  Squared distances are written per coordinate so that XLA fuses them into the two min
  reductions: no [n, m] matrix goes through memory (2x faster than the GEMM form on CPU), and
  there is no |a|^2 + |b|^2 - 2ab cancellation.
  """
  d2 = sum((a[..., :, None, k] - b[..., None, :, k]) ** 2 for k in range(3))
  return jnp.sqrt(jnp.min(d2, axis=-1)), jnp.sqrt(jnp.min(d2, axis=-2))


def fscore(pred, gt, thresholds=(0.005, 0.015)):
  """F-scores [..., len(thresholds)] between point sets pred [..., n, 3] and gt [..., m, 3].

  precision = share of predicted points strictly closer than t to gt, recall = share of gt
  points strictly closer than t to the prediction, F = 2PR / (P + R), 0 when both are 0.
  """
  d_pred, d_gt = nearest_distances(pred, gt)
  t = jnp.asarray(thresholds, pred.dtype)
  precision = jnp.mean((d_pred[..., None] < t).astype(pred.dtype), axis=-2)
  recall = jnp.mean((d_gt[..., None] < t).astype(pred.dtype), axis=-2)
  denom = precision + recall
  return jnp.where(denom > 0, 2 * precision * recall / jnp.where(denom > 0, denom, 1.0), 0.0)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["dist", "score"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Stats:
  """Sums over samples. dist[name] = {"sum": [n], "count": [n], "pck": [n, T]};
  score[name] = {"sum": [], "count": []}."""

  dist: dict
  score: dict

  def __add__(self, other: Stats) -> Stats:
    return jax.tree_util.tree_map(jnp.add, self, other)


def batch_stats(dists: dict, scores: dict | None = None, sample_mask=None, point_masks=None):
  """Stats of one batch.

  dists: {name: errors [b, n] (metres)}; scores: {name: values [b], or (values [b], weights
  [b]) for a weighted mean}; sample_mask [b] (1 real,
  0 padding); point_masks: {name: [b, n]} for keypoints without ground truth (e.g. DexYCB).
  """
  scores = scores or {}
  point_masks = point_masks or {}
  first = next(iter(scores.values()), None)
  first = first[0] if isinstance(first, tuple) else first
  b = next(iter(dists.values())).shape[0] if dists else first.shape[0]
  sm = jnp.ones((b,), jnp.float32) if sample_mask is None else jnp.asarray(sample_mask)
  dist_out = {}
  for name, err in dists.items():
    m = jnp.broadcast_to(sm[:, None], err.shape).astype(err.dtype)
    if name in point_masks:
      m = m * point_masks[name].astype(err.dtype)
    err = jnp.where(m > 0, err, 0.0)  # padded rows may hold NaN: keep them out of the sums
    dist_out[name] = {
      "sum": jnp.sum(err * m, axis=0),
      "count": jnp.sum(m, axis=0),
      # An explicit dtype: inside jax.enable_x64, jnp.asarray(float64 array) can come back as
      # float32 after earlier non-x64 traces (seen with JAX 0.10), rounding the thresholds.
      "pck": _pck_counts(err, m, jnp.asarray(THRESHOLDS_M, err.dtype)),
    }
  score_out = {}
  for name, val in scores.items():
    w = None
    if isinstance(val, tuple):  # (values [b], weights [b]): a weighted mean over samples
      val, w = val
    m = sm.astype(val.dtype) if w is None else sm.astype(val.dtype) * w.astype(val.dtype)
    score_out[name] = {"sum": jnp.sum(jnp.where(m > 0, val, 0.0) * m), "count": jnp.sum(m)}
  return Stats(dist_out, score_out)


def _pck_counts(err, m, t):
  """sum_b m[b, n] * (err[b, n] <= t[k]) -> [n, T], in O(b n): a histogram of each error's
  first threshold bin, then a cumulative sum (instead of comparing with all T thresholds)."""
  n_t = t.shape[0]
  step = t[1] - t[0]
  k = jnp.clip(jnp.ceil(err / step), 0, n_t).astype(jnp.int32)  # first k with err <= t[k]
  # Correct the division's rounding against the exact threshold values (<=, as the scorers).
  k = jnp.where((k > 0) & (err <= t[jnp.maximum(k - 1, 0)]), k - 1, k)
  k = jnp.where((k < n_t) & (err > t[jnp.minimum(k, n_t - 1)]), k + 1, k)
  k = jnp.where(jnp.isfinite(err), k, n_t)  # NaN or inf: never within any threshold
  cols = jnp.broadcast_to(jnp.arange(err.shape[-1]), err.shape)
  hist = jnp.zeros((err.shape[-1], n_t + 1), err.dtype).at[cols, k].add(m)
  return jnp.cumsum(hist[:, :n_t], axis=-1)


def allgather_sum(stats: Stats) -> Stats:
  """Sums `stats` over all processes (every host must call it, e.g. at the end of eval)."""
  if jax.process_count() == 1:
    return stats
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(stats)
  return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), gathered)


def finalize(stats: Stats) -> dict[str, float]:
  """Dataset metrics: '<name>' mean error in mm, 'AUC_<name>' in [0, 1], scores as they are."""
  out = {}
  t = THRESHOLDS_M
  norm = np.trapezoid(np.ones_like(t), t)
  for name, d in stats.dist.items():
    total = np.asarray(d["sum"], np.float64)
    count = np.asarray(d["count"], np.float64)
    seen = count > 0
    if not seen.any():
      out[name] = out[f"AUC_{name}"] = float("nan")
      continue
    out[name] = float(np.mean(total[seen] / count[seen]) * 1000.0)
    pck = np.asarray(d["pck"], np.float64)[seen] / count[seen, None]
    out[f"AUC_{name}"] = float(np.mean(np.trapezoid(pck, t, axis=-1) / norm))
  for name, s in stats.score.items():
    c = float(s["count"])
    out[name] = float(s["sum"]) / c if c > 0 else float("nan")
  return out


def pck_2d(pred_uv, gt_uv, threshold_px, mask=None):
  """Share of 2D keypoints within `threshold_px` pixels (<=): pred_uv, gt_uv [..., n, 2]."""
  hit = (point_errors(pred_uv, gt_uv) <= threshold_px).astype(jnp.float32)
  if mask is None:
    return jnp.mean(hit)
  mask = mask.astype(jnp.float32)
  return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)
