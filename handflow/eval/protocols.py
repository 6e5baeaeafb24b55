"""Benchmark protocols: which keypoint order, frame, alignments and metric names each reports.

A `Protocol` fixes what the field reports on a benchmark (REFERENCE §2):
- freihand: absolute and Procrustes (reflection allowed, as the official scorer) joint and mesh
  errors, AUC over 0-50 mm, F@5/F@15 mm on aligned and unaligned meshes. OpenPose order.
- ho3d_v2 / ho3d_v3: FreiHAND's set in HO3D order and the OpenGL camera frame, plus the
  scale-translation aligned joint error (ST-MPJPE: scale by the wrist-middle-MCP length, wrists
  coincide).
- dexycb (setups s0-s3 share it): absolute, root-relative (wrist) and Procrustes MPJPE in the
  camera frame, each with its AUC; samples whose ground truth is all -1 are skipped.
- hanco: HaMuCo's protocol (no official scorer): prediction scaled so that its wrist-middle-MCP
  length equals the ground truth's and translated so that keypoint 9 (middle MCP) coincides;
  Procrustes with a proper rotation (det = +1). Meshes take the joints' scale and root.
- rootrel: plain root-relative (wrist) errors and Procrustes, OpenPose order.
Literature names: PA-MPJPE / PA-MPVPE (Procrustes), AUC_J / AUC_V (their AUCs), F@5 / F@15
(aligned meshes). `convention` names the hand-model preset that reads a prediction's 21
keypoints as the benchmark's labels do (FreiHAND: regressor on the posed mesh; HO3D, DexYCB:
their fingertip vertices; HanCo and rootrel: the model's own tips, e.g. for the open hand).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from handflow.eval import metrics
from handflow.geometry import alignment

ALIGNMENTS = ("none", "root", "scale_root", "procrustes")


@dataclasses.dataclass(frozen=True)
class Protocol:
  name: str
  joints: tuple[tuple[str, str], ...]  # (metric name, alignment)
  order: str = "openpose"  # keypoint order of predictions and ground truth: "openpose" | "ho3d"
  frame: str = "opencv"  # camera frame of the 3D: "opencv" | "opengl"
  convention: str = "openpose"  # how keypoints are read off a predicted hand (hand.conventions)
  root: int = 0  # root keypoint (in `order`)
  scale_ref: tuple[int, int] = (0, 9)  # bone whose length scale_root alignment matches
  vertices: tuple[tuple[str, str], ...] = ()
  fscores: tuple[tuple[str, str, float], ...] = ()  # (name, alignment, threshold in metres)
  allow_reflection: bool = True
  skip_invalid_gt: bool = False  # DexYCB: samples whose ground truth is all -1
  aliases: tuple[tuple[str, str], ...] = ()  # literature name -> metric key
  report: tuple[str, ...] = ()

  def __post_init__(self):
    for name, kind in self.joints + self.vertices + tuple((n, k) for n, k, _ in self.fscores):
      if kind not in ALIGNMENTS:
        raise ValueError(f"protocol {self.name}: metric {name} has unknown alignment '{kind}'")


_FREIHAND_MESH = dict(
  vertices=(("MPVPE", "none"), ("PA-MPVPE", "procrustes")),
  fscores=(
    ("F@5", "procrustes", 0.005),
    ("F@15", "procrustes", 0.015),
    ("F@5_unaligned", "none", 0.005),
    ("F@15_unaligned", "none", 0.015),
  ),
  aliases=(("AUC_J", "AUC_PA-MPJPE"), ("AUC_V", "AUC_PA-MPVPE")),
)


def _ho3d(name):
  return Protocol(
    name=name,
    order="ho3d",
    frame="opengl",
    convention="ho3d",
    scale_ref=(0, 4),
    joints=(("MPJPE", "none"), ("ST-MPJPE", "scale_root"), ("PA-MPJPE", "procrustes")),
    report=("PA-MPJPE", "PA-MPVPE", "F@5", "F@15", "AUC_J", "AUC_V", "ST-MPJPE", "MPJPE"),
    **_FREIHAND_MESH,
  )


PRESETS = {
  p.name: p
  for p in (
    Protocol(
      name="freihand",
      convention="freihand",
      joints=(("MPJPE", "none"), ("PA-MPJPE", "procrustes")),
      report=("PA-MPJPE", "PA-MPVPE", "F@5", "F@15", "AUC_J", "AUC_V", "MPJPE", "MPVPE"),
      **_FREIHAND_MESH,
    ),
    _ho3d("ho3d_v2"),
    _ho3d("ho3d_v3"),
    Protocol(
      name="dexycb",
      convention="dexycb",
      joints=(("MPJPE", "none"), ("RR-MPJPE", "root"), ("PA-MPJPE", "procrustes")),
      skip_invalid_gt=True,
      report=("MPJPE", "AUC_MPJPE", "RR-MPJPE", "AUC_RR-MPJPE", "PA-MPJPE", "AUC_PA-MPJPE"),
    ),
    Protocol(
      name="hanco",
      root=9,
      joints=(("MPJPE", "scale_root"), ("PA-MPJPE", "procrustes")),
      vertices=(("MPVPE", "scale_root"), ("PA-MPVPE", "procrustes")),
      allow_reflection=False,
      report=("MPJPE", "MPVPE", "PA-MPJPE", "PA-MPVPE"),
    ),
    Protocol(
      name="rootrel",
      joints=(("MPJPE", "root"), ("PA-MPJPE", "procrustes")),
      vertices=(("MPVPE", "root"), ("PA-MPVPE", "procrustes")),
      report=("MPJPE", "MPVPE", "PA-MPJPE", "PA-MPVPE"),
    ),
  )
}


def get(name: str | Protocol) -> Protocol:
  if isinstance(name, Protocol):
    return name
  if name not in PRESETS:
    raise ValueError(f"unknown evaluation protocol '{name}'; known: {sorted(PRESETS)}")
  return PRESETS[name]


def _aligner(p: Protocol, kind: str, pred_j, gt_j):
  """A function mapping prediction points into the ground truth's frame, fit on the joints."""
  if kind == "none":
    return lambda x: x
  if kind == "root":
    offset = gt_j[..., p.root : p.root + 1, :] - pred_j[..., p.root : p.root + 1, :]
    return lambda x: x + offset
  if kind == "scale_root":
    bone = lambda j: jnp.linalg.norm(j[..., p.scale_ref[1], :] - j[..., p.scale_ref[0], :], axis=-1)
    lp, lg = bone(pred_j), bone(gt_j)
    s = jnp.where(lp > 1e-9, lg / jnp.where(lp > 1e-9, lp, 1.0), 1.0)[..., None, None]
    pr, gr = pred_j[..., p.root : p.root + 1, :], gt_j[..., p.root : p.root + 1, :]
    return lambda x: (x - pr) * s + gr
  params = alignment.similarity_transform(pred_j, gt_j, allow_reflection=p.allow_reflection)
  return lambda x: alignment.apply_similarity(x, *params)


def sample_metrics(p: Protocol, pred_j, gt_j, pred_v=None, gt_v=None):
  """Per-sample errors of one batch: ({name: [b, n] metres}, {name: [b]})."""
  dists, scores = {}, {}
  for name, kind in p.joints:
    dists[name] = metrics.point_errors(_aligner(p, kind, pred_j, gt_j)(pred_j), gt_j)
  if pred_v is not None and (p.vertices or p.fscores):
    aligned = {}
    for kind in {k for _, k in p.vertices} | {k for _, k, _ in p.fscores}:
      # Procrustes on meshes fits its own transform on the vertices (as the official scorers).
      fit = (pred_v, gt_v) if kind == "procrustes" else (pred_j, gt_j)
      aligned[kind] = _aligner(p, kind, *fit)(pred_v)
    for name, kind in p.vertices:
      dists[name] = metrics.point_errors(aligned[kind], gt_v)
    for kind in {k for _, k, _ in p.fscores}:  # one distance matrix per alignment
      group = [(name, t) for name, k, t in p.fscores if k == kind]
      f = metrics.fscore(aligned[kind], gt_v, tuple(t for _, t in group))
      scores.update({name: f[..., i] for i, (name, _) in enumerate(group)})
  return dists, scores


@functools.partial(jax.jit, static_argnums=0)
def batch_stats(p: Protocol, pred_j, gt_j, pred_v=None, gt_v=None, sample_mask=None):
  """metrics.Stats of one batch (jit-able; usable as the eval step inside training)."""
  if p.skip_invalid_gt:
    valid = ~jnp.all(gt_j == -1.0, axis=(-2, -1))
    sample_mask = valid if sample_mask is None else sample_mask * valid
  dists, scores = sample_metrics(p, pred_j, gt_j, pred_v, gt_v)
  return metrics.batch_stats(dists, scores, sample_mask)


def check_inputs(p: Protocol, pred_j, gt_j, pred_v=None, gt_v=None, *, source: str = "predictions"):
  """Host-side checks with errors that name the problem (never a silently wrong number)."""
  pred_j, gt_j = np.asarray(pred_j), np.asarray(gt_j)
  if pred_j.ndim != 3 or pred_j.shape[1:] != (21, 3):
    raise ValueError(f"{source}: joints must be [samples, 21, 3], got {pred_j.shape}")
  if gt_j.shape[1:] != (21, 3):
    raise ValueError(f"ground truth: joints must be [samples, 21, 3], got {gt_j.shape}")
  if len(pred_j) != len(gt_j):
    raise ValueError(f"{source} has {len(pred_j)} samples, the ground truth {len(gt_j)}")
  for who, arr in ((source, pred_j), ("ground truth", gt_j)):
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
    if bad.size:
      raise ValueError(f"{who}: NaN or inf joints in {bad.size} samples, first {bad[:5].tolist()}")
  if (pred_v is None) != (gt_v is None) and p.vertices:
    which = "predictions" if pred_v is None else "ground truth"
    raise ValueError(f"protocol {p.name} scores meshes, but the {which} has no vertices")
  if pred_v is not None and gt_v is not None:
    pred_v, gt_v = np.asarray(pred_v), np.asarray(gt_v)
    if pred_v.shape != gt_v.shape or pred_v.ndim != 3 or pred_v.shape[-1] != 3:
      raise ValueError(f"{source}: vertices {pred_v.shape} do not match ground truth {gt_v.shape}")
    for who, arr in ((source, pred_v), ("ground truth", gt_v)):
      bad = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
      if bad.size:
        raise ValueError(f"{who}: NaN/inf vertices in {bad.size} samples, first {bad[:5].tolist()}")
  valid = ~np.all(gt_j == -1.0, axis=(1, 2)) if p.skip_invalid_gt else np.ones(len(gt_j), bool)
  if valid.any():
    spread = lambda j: np.linalg.norm(j - j[:, :1], axis=-1).mean(-1)  # [n] per sample
    per_p, per_g = spread(pred_j), spread(gt_j)
    sp, sg = np.median(per_p[valid]), np.median(per_g[valid])
    if sg > 0 and sp / sg > 30:
      raise ValueError(
        f"{source} look like millimetres (median hand spread {sp:.1f}) while the ground truth is "
        f"in metres ({sg:.3f}): divide by 1000"
      )
    if sg > 0 and sp / sg < 1 / 30:
      raise ValueError(
        f"{source} look like metres (median hand spread {sp:.4f}) while the ground truth is in "
        f"millimetres ({sg:.1f}): handflow's ground truth should be in metres"
      )
    # One sample in other units than the rest moves the mean by metres; the median checks above
    # do not see it. A hand 100x the ground truth's size is never a prediction in metres.
    odd = np.flatnonzero(valid & (per_g > 0) & (per_p > 100 * per_g))
    if odd.size:
      raise ValueError(
        f"{source}: {odd.size} samples are over 100x the ground truth's size (first "
        f"{odd[:5].tolist()}, spread {per_p[odd[0]]:.3g} vs {per_g[odd[0]]:.3g}): mixed units?"
      )
  if p.frame == "opengl" and np.mean(pred_j[valid, :, 2] > 0) > 0.5:
    raise ValueError(
      f"{source}: most joints have z > 0, i.e. the OpenCV camera frame, but protocol {p.name} "
      "expects the OpenGL frame (z < 0 in front of the camera): apply "
      "handflow.geometry.cameras.opencv_to_opengl"
    )


def evaluate(p, pred_j, gt_j, pred_v=None, gt_v=None, *, batch_size=256, float64=True):
  """Scores whole arrays on the host: checks inputs, streams batches, returns the report.

  Returns {metric: value} with every metric (mm, AUC in [0, 1], F-scores in [0, 1]) and the
  literature aliases; `report_keys(p)` lists them in the protocol's order.
  """
  p = get(p)
  check_inputs(p, pred_j, gt_j, pred_v, gt_v)
  n = len(pred_j)
  with jax.enable_x64(float64):
    dtype = jnp.float64 if float64 else jnp.float32
    total = None
    for i in range(0, n, batch_size):
      sl = slice(i, i + batch_size)
      pad = batch_size - len(pred_j[sl]) if n > batch_size else 0
      arrays = [a[sl] if a is not None else None for a in (pred_j, gt_j, pred_v, gt_v)]
      arrays = [None if a is None else np.pad(a, [(0, pad), (0, 0), (0, 0)]) for a in arrays]
      mask = np.concatenate([np.ones(batch_size - pad), np.zeros(pad)]) if pad else None
      arrays = [None if a is None else jnp.asarray(a, dtype) for a in arrays]
      stats = batch_stats(p, *arrays, None if mask is None else jnp.asarray(mask, dtype))
      total = stats if total is None else total + stats
    out = metrics.finalize(total)
  for alias, key in p.aliases:
    if key in out:
      out[alias] = out[key]
  return out


def report_keys(p: Protocol, results: dict) -> list[str]:
  return [k for k in p.report if k in results] + sorted(
    k for k in results if k not in p.report and k not in dict(p.aliases)
  )
