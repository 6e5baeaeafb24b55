"""Reference rows that need no model: the best constant hand under Procrustes alignment.

A PA-MPJPE says little without the error of a hand that never changes. After a similarity
alignment a constant hand scores the spread of the data's articulation alone, so a regressor
that has learned nothing image-specific converges to it. Reports print two constants: the
untrained model (the hand model's template) and `mean_hand`, the generalised Procrustes mean of
the training images' labelled keypoints (the images a method may read labels of). Only the
Procrustes-aligned metrics mean anything for a constant (the others measure where it was put).

On the embedded data (`synthetic_hands`, 400 training clips) the template scores 20.8 mm
PA-MPJPE on the test split and the training mean 14.3.

`spread(points)`: the articulation a set of hands shows, the mean Procrustes-aligned distance of
each from their own generalised Procrustes mean (mm). Reports print it for the ground truth
and for the predictions: a regressor that returns one articulation for every image has a
spread near 0 whatever its PA-MPJPE, which tells a model that reads fingers from one that has
found the mean hand (the ground truth's, on the embedded test splits: 14.3 mm for the single
images, 13.2 for UST-Hand's clips).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from handflow.eval import protocols
from handflow.geometry import alignment


def _rms(x):
  return np.sqrt(np.mean(np.sum(x**2, -1), -1))


def mean_hand(points, iters: int = 20, tol: float = 1e-7) -> np.ndarray:
  """Generalised Procrustes mean [p, 3] of points [n, p, 3] (metres): every sample aligned to
  the current mean by a rotation, scale and translation (no reflection: a mirrored hand is not
  the same hand), averaged, re-centred and rescaled to the samples' mean RMS size, until it
  moves less than `tol`."""
  x = np.asarray(points, np.float64)
  if x.ndim != 3 or x.shape[0] == 0 or x.shape[-1] != 3:
    raise ValueError(f"mean_hand: points must be [n > 0, p, 3], got {x.shape}")
  x = x - x.mean(1, keepdims=True)
  size = float(np.mean(_rms(x)))
  ref = x[0] * size / max(_rms(x[0]), 1e-12)
  for _ in range(iters):
    with jax.enable_x64(True):  # float64 on the host: the fixed point is checked to `tol`
      al = alignment.procrustes(x, np.broadcast_to(ref, x.shape), allow_reflection=False)
    new = np.asarray(al).mean(0)
    new = new - new.mean(0)
    new = new * size / max(_rms(new), 1e-12)
    done = np.max(np.abs(new - ref)) < tol
    ref = new
    if done:
      break
  return ref


def spread(points) -> float:
  """Mean Procrustes-aligned distance (mm) of points [n, p, 3] (metres) from their generalised
  Procrustes mean (`mean_hand`): 0 when every sample is the same hand up to a similarity."""
  x = np.asarray(points, np.float64)
  ref = mean_hand(x)
  with jax.enable_x64(True):
    al = np.asarray(alignment.procrustes(x, np.broadcast_to(ref, x.shape), allow_reflection=False))
  return float(np.mean(np.linalg.norm(al - ref, axis=-1)) * 1000.0)


def labelled_points(batches: Iterable[dict], select: Callable, limit: int = 4096) -> np.ndarray:
  """[n, 21, 3] ground-truth keypoints ("xyz" [b, t, 21, 3], any frame) of the images
  `select(batch) -> [b * t]` marks (padding excluded by it), at most `limit` of them (the mean
  settles long before)."""
  out, n = [], 0
  for b in batches:
    sel = np.asarray(select(b)).reshape(-1) > 0
    x = np.asarray(b["xyz"]).reshape(sel.shape + (21, 3))
    out.append(x[sel])
    n += int(sel.sum())
    if n >= limit:
      break
  if not n:
    return np.zeros((0, 21, 3), np.float32)
  return np.concatenate(out)[:limit]


def constant_metrics(ref, gt_j, names) -> dict:
  """{"<protocol>/<metric>": mm} of the constant hand ref [p, 3] against gt_j [n, p, 3], for
  every protocol in `names` and each of its Procrustes-aligned keypoint metrics."""
  out = {}
  for name in names:
    p = protocols.get(name)
    gt = np.asarray(gt_j, np.float32)
    if p.skip_invalid_gt:
      gt = gt[~np.all(gt == -1.0, axis=(-2, -1))]
    if not len(gt):
      continue
    pa = tuple((k, kind) for k, kind in p.joints if kind == "procrustes")
    p = dataclasses.replace(p, joints=pa, vertices=(), fscores=())
    pred = np.broadcast_to(np.asarray(ref, np.float32), gt.shape)
    dists, _ = protocols.sample_metrics(p, jnp.asarray(pred), jnp.asarray(gt))
    out.update({f"{name}/{k}": float(jnp.mean(d)) * 1000.0 for k, d in dists.items()})
  return out
