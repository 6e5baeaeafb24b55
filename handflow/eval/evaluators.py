"""Evaluators: what a run measures, listed in `config.evaluators` and run over `predict` outputs.

  evals = from_config(config)                      # [Evaluator, ...]
  stats_fn = make_stats_fn(method, evals, mesh)    # jitted (params, extra, batch) -> Stats
  results = evaluate(stats_fn, params, extra, batches, mesh)   # exact dataset metrics

An evaluator's `stats(method, params, extra, pred, batch)` returns the `metrics.Stats` of one
batch (exact, mask-aware; summed over batches and hosts), or None when it has nothing to say for
these outputs. All of them share one `predict` call per batch inside one compiled function.
Metrics are per frame (b * t samples; padding masked). Config entries (a dict name -> options):

- `pose3d` {protocols, rows, teacher}: `eval.protocols` tables for each row
  (prefix, joints key, vertices key or ""), e.g. ("", "joints", "vertices"),
  ("stage1/", "stage1_joints", ""); keys `<prefix><protocol>/<metric>` (MPJPE, MPVPE, PA-*, mm).
  MPVPE needs ground-truth meshes (`verts`) with the predicted mesh's vertex count; real data's
  frames without a mesh fit (`has_verts` 0) are masked. `teacher`: the pseudo-labels
  triangulated robustly (`methods.teacher.joints`, >= 2 views) as the row `teacher/`, over the
  frames where it triangulates all 21 joints (their share: `teacher/full_hands`), with the
  first row's joints on the same frames as `teacher_frames/`; and the first row's joints
  against the teacher's on the same joints, in the world frame:
  `versus/all/{model,teacher}` where the teacher triangulates, `versus/hard/...` where it is off
  by more than 20 mm, `versus/no_teacher/model` where fewer than two views detected the joint
  (a count of 0 gives NaN).
- `viewpoint` {protocol, bins, joints, vertices, side}: the protocol's metrics per bin of the
  camera-palm angle of the ground truth, `view/<lo>-<hi>/<metric>` and `view/<lo>-<hi>/share`
  (single-image methods: CycleHand).
- `uv2d` {rows, teacher}: mean 2D error against the ground truth in crop pixels for each row
  (prefix, uv key) as `<prefix>uv_err_px`; `teacher`: the pseudo-labels' own error over their
  detections as `teacher/uv_err_px`.
- `calibration` {levels}: how often the ground truth lies inside the predicted regions (ideal:
  the level). 3D: the ball around the final keypoints (`joints`) whose radius is the predicted
  RMS error (`uncertainty`) scaled to the level as for an isotropic Gaussian (`chi3_radius`),
  `calib/3d_<level>`; 2D, for methods with a density (`method.uv_log_density`): the
  highest-density region thresholded at the quantile of the K samples' log-densities
  (`uv_log_lik`), `calib/2d_<level>`.
  The Gaussian radius assumes the uncertainty is the true RMS error; `conformal_scales` instead
  picks each level's radius (a multiple of `uncertainty`) on the validation split (split
  conformal prediction), and `coverage` scores it on test: `calib/3d_<level>_conformal` in the
  report, exact per joint, with the multiples as `calib/3d_<level>_scale`.
- `labels` {wrong, right}: the share of wrong / right pseudo-labels a method's `label_weight`
  pushes below half their confidence, `labels/{wrong,right}_downweighted`.

Saving predictions is the entry's `predict` mode (`handflow.modes.write_predictions`), which
runs the same `predict` over the test split and writes every output key.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from handflow import sharding
from handflow.eval import metrics, protocols
from handflow.geometry import cameras, viewpoint
from handflow.methods import teacher


def _frames(x):
  """[b, t, ...] -> [b * t, ...]."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _frame_mask(batch):
  return jnp.repeat(batch["mask"], batch["images"].shape[1])


HARD_M = 0.02  # a teacher joint off by more than this is a hard case (metres)


@dataclasses.dataclass(frozen=True)
class Pose3D:
  protocols: tuple = ("hanco", "rootrel")
  rows: tuple = (("", "joints", "vertices"),)
  teacher: bool = False

  def stats(self, method, params, extra, pred, batch):
    del method, params, extra
    gt_j = _frames(batch["xyz"])
    gt_v = _frames(batch["verts"]) if "verts" in batch else None
    dists, scores, point_masks = {}, {}, {}

    def add(prefix, pred_j, pred_v, frames=None):
      """frames [n] bool: score only these frames (the teacher's full hands)."""
      if pred_v is not None and (gt_v is None or gt_v.shape[-2] != pred_v.shape[-2]):
        pred_v = None  # e.g. MANO ground truth for a model with the open hand: no MPVPE
      for name in self.protocols:
        p = protocols.get(name)
        d, s = protocols.sample_metrics(p, pred_j, gt_j, pred_v, None if pred_v is None else gt_v)
        dists.update({f"{prefix}{name}/{k}": v for k, v in d.items()})
        scores.update({f"{prefix}{name}/{k}": v if frames is None else (v, frames)
                       for k, v in s.items()})  # fmt: skip
        if pred_v is not None and "has_verts" in batch:  # real data: frames without a mesh fit
          has = _frames(batch["has_verts"])[:, None]
          for k, _ in p.vertices:
            point_masks[f"{prefix}{name}/{k}"] = jnp.broadcast_to(has, d[k].shape)
        if frames is not None:
          for k in d:
            key = f"{prefix}{name}/{k}"
            sel = jnp.broadcast_to(frames[:, None], d[k].shape)
            old = point_masks.get(key)
            point_masks[key] = sel if old is None else jnp.logical_and(old > 0, sel)

    for prefix, jkey, vkey in self.rows:
      if jkey in pred:
        add(prefix, _frames(pred[jkey]), _frames(pred[vkey]) if vkey and vkey in pred else None)
    if self.teacher and batch["images"].shape[2] >= 2:
      x_t, valid_t = (_frames(a) for a in teacher.joints_and_valid(batch))
      # The teacher's row holds the frames where it triangulates the whole hand (an alignment
      # needs every joint), and the model is scored on the same frames beside it.
      full = jnp.all(valid_t, axis=-1)
      scores["teacher/full_hands"] = full.astype(jnp.float32)
      add("teacher/", jnp.where(valid_t[..., None], x_t, 0.0), None, full)
      if self.rows and self.rows[0][1] in pred:
        model_j = _frames(pred[self.rows[0][1]])
        add("teacher_frames/", model_j, None, full)
        self._versus_teacher(model_j, x_t, valid_t, gt_j, dists, point_masks)
    if not dists:
      return None
    return metrics.batch_stats(dists, scores, _frame_mask(batch), point_masks)

  @staticmethod
  def _versus_teacher(pred_j, x_t, valid_t, gt_j, dists, point_masks):
    """Model and teacher on the same joints, world frame (no alignment: both are in the
    cameras' frame), `versus/<set>/<who>` for the joints the teacher triangulates (`all`),
    those where it is off by more than HARD_M (`hard`), and the model alone where fewer than
    two views detected the joint (`no_teacher/model`)."""
    e_model = jnp.linalg.norm(pred_j - gt_j, axis=-1)  # [n, 21]
    e_teacher = jnp.where(valid_t, jnp.linalg.norm(x_t - gt_j, axis=-1), 0.0)
    sets = {
      "all": valid_t,
      "hard": valid_t & (e_teacher > HARD_M),
      "no_teacher": ~valid_t,
    }
    for name, sel in sets.items():
      for who, err in (("model", e_model), ("teacher", e_teacher)):
        if name == "no_teacher" and who == "teacher":
          continue
        dists[f"versus/{name}/{who}"] = err
        point_masks[f"versus/{name}/{who}"] = sel


@dataclasses.dataclass(frozen=True)
class Viewpoint:
  """A protocol's metrics binned by where the camera sees the hand from: the angle between the
  ray to the camera and the palm normal of the ground truth (`geometry.viewpoint`, view 0 of
  each frame; 0 = palm, 180 = back). Keys `view/<lo>-<hi>/<metric>` and the bin's share of the
  samples `view/<lo>-<hi>/share`."""

  protocol: str = "freihand"
  bins: tuple = viewpoint.BINS_DEG
  joints: str = "joints"
  vertices: str = "vertices"
  side: str = "right"

  def stats(self, method, params, extra, pred, batch):
    del method, params, extra
    if self.joints not in pred:
      return None
    gt_j = _frames(batch["xyz"])
    T = _frames(batch["T_cam_world"][:, :, 0])  # [n, 4, 4]: view 0
    angle = viewpoint.palm_angle(cameras.transform(T, gt_j), self.side)
    pred_v = _frames(pred[self.vertices]) if self.vertices in pred else None
    gt_v = _frames(batch["verts"]) if "verts" in batch else None
    if pred_v is not None and (gt_v is None or gt_v.shape[-2] != pred_v.shape[-2]):
      pred_v = gt_v = None
    d, s = protocols.sample_metrics(
      protocols.get(self.protocol), _frames(pred[self.joints]), gt_j, pred_v, gt_v
    )
    dists, scores, point_masks = {}, {}, {}
    for name, sel in zip(viewpoint.bin_names(self.bins), viewpoint.bin_masks(angle, self.bins),
                         strict=True):  # fmt: skip
      for k, v in d.items():
        dists[f"view/{name}/{k}"] = v
        point_masks[f"view/{name}/{k}"] = jnp.broadcast_to(sel[:, None], v.shape)
      for k, v in s.items():
        scores[f"view/{name}/{k}"] = (v, sel)
      scores[f"view/{name}/share"] = sel.astype(jnp.float32)
    return metrics.batch_stats(dists, scores, _frame_mask(batch), point_masks)


@dataclasses.dataclass(frozen=True)
class Uv2D:
  rows: tuple = (("", "uv"),)
  teacher: bool = False

  def stats(self, method, params, extra, pred, batch):
    del method, params, extra
    scores = {
      f"{prefix}uv_err_px": _frames(teacher.uv_error_px(pred[key], batch))
      for prefix, key in self.rows
      if key in pred
    }
    if self.teacher:
      scores["teacher/uv_err_px"] = _frames(teacher.uv_error_teacher_px(batch))
    return metrics.batch_stats({}, scores, _frame_mask(batch)) if scores else None


def chi3_radius(level: float) -> float:
  """r with P(|e| <= r * u / sqrt(3)) = level for an isotropic 3D Gaussian e whose RMS length is
  u: sqrt of the chi-square (3 dof) quantile (bisection on its closed-form CDF)."""
  cdf = lambda x: math.erf(math.sqrt(x / 2)) - math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
  lo, hi = 0.0, 100.0
  for _ in range(100):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if cdf(mid) < level else (lo, mid)
  return math.sqrt((lo + hi) / 2)


@dataclasses.dataclass(frozen=True)
class Calibration:
  levels: tuple = (0.5, 0.9)

  def stats(self, method, params, extra, pred, batch):
    res = {}
    if "uncertainty" in pred:
      # 3D: the ball around the final keypoints whose radius is the predicted RMS error
      # `uncertainty` [b, t, 21] scaled to the level under an isotropic Gaussian.
      d_gt = jnp.linalg.norm(batch["xyz"] - pred["joints"], axis=-1)
      for level in self.levels:
        r = pred["uncertainty"] * chi3_radius(level) / math.sqrt(3.0)
        res[f"calib/3d_{round(level * 100)}"] = _frames(jnp.mean(d_gt <= r, axis=-1))
    density = getattr(method, "uv_log_density", None)
    # Heads without samples (laplace, l1: one point per joint) have no 2D region here.
    if density is not None and pred.get("uv_log_lik", jnp.zeros((0,))).shape[-1] > 0:
      lp_gt = density(params, extra, batch, batch["uv"])  # [b, t, v, 21]
      for level in self.levels:
        q2 = jnp.quantile(pred["uv_log_lik"], 1.0 - level, axis=-1)
        res[f"calib/2d_{round(level * 100)}"] = _frames(jnp.mean(lp_gt >= q2, axis=(2, 3)))
    if not res:
      return None
    res = {k: v.astype(jnp.float32) for k, v in res.items()}
    return metrics.batch_stats({}, res, _frame_mask(batch))


def ratios(predict_fn, params, extra, batches, mesh) -> np.ndarray:
  """Each real final keypoint's 3D error in units of its predicted RMS error,
  |xyz - joints| / uncertainty, over one pass of per-host `batches` (flat; padding and
  non-finite values dropped). predict_fn: the method's jitted `predict` on global batches (the
  report shares it with its figures: one compilation)."""
  out = []
  for local in batches:
    pred = predict_fn(params, extra, sharding.global_batch(local, mesh))
    joints, u = sharding.local_rows(pred["joints"]), sharding.local_rows(pred["uncertainty"])
    r = np.linalg.norm(np.asarray(local["xyz"]) - joints, axis=-1) / np.maximum(u, 1e-9)
    out.append(np.where((np.asarray(local["mask"]) > 0)[:, None, None], r, np.nan))
  if not out:
    return np.zeros((0,), np.float32)
  # Every host has the same number of (padded) batches: gather them all, then drop padding.
  r = np.concatenate(out)
  if jax.process_count() > 1:
    r = np.asarray(multihost_utils.process_allgather(r))
  r = r.reshape(-1)
  return r[np.isfinite(r)]


def conformal_scales(r_calib: np.ndarray, levels) -> dict:
  """{level: q}: the radius q * uncertainty covers at least `level` of new keypoints exchangeable
  with the calibration ones (split conformal: the ceil((n + 1) level)-th smallest ratio)."""
  n = len(r_calib)
  if n == 0:
    raise ValueError("conformal_scales: no calibration keypoints")
  r = np.sort(r_calib)
  return {lv: float(r[min(n - 1, math.ceil((n + 1) * lv) - 1)]) for lv in levels}


def coverage(r: np.ndarray, scales: dict) -> dict:
  """{level: share of ratios r <= its scale} (NaN without keypoints)."""
  return {lv: float(np.mean(r <= q)) if len(r) else float("nan") for lv, q in scales.items()}


@dataclasses.dataclass(frozen=True)
class Labels:
  """How the method weighs the pseudo-labels (`label_weight [b, t, v, 21]` from predict):
  `labels/wrong_downweighted` is the share of wrong labels (off by more than `wrong` x the
  hand's 2D size from the ground truth) whose weight fell below half their confidence;
  `labels/right_downweighted` the same for right ones (within `right` x the size)."""

  wrong: float = 0.1
  right: float = 0.03

  def stats(self, method, params, extra, pred, batch):
    del method, params, extra
    if "label_weight" not in pred:
      return None
    conf = batch["conf"]
    err = jnp.linalg.norm(batch["uv_pl"] - batch["uv"], axis=-1)
    size = jnp.linalg.norm(batch["uv"].max(-2) - batch["uv"].min(-2), axis=-1)[..., None]
    down = (pred["label_weight"] < 0.5 * conf) & (conf > 0)
    scores = {}
    for name, sel in (("wrong", err > self.wrong * size), ("right", err < self.right * size)):
      sel = sel & (conf > 0)
      n = jnp.sum(sel, axis=(2, 3)).astype(jnp.float32)
      frac = jnp.sum(down & sel, axis=(2, 3)) / jnp.maximum(n, 1.0)
      scores[f"labels/{name}_downweighted"] = (_frames(frac), _frames(n))  # pooled over labels
    return metrics.batch_stats({}, scores, _frame_mask(batch))


def _frozen(v):
  """Lists (from a config) -> tuples, so that evaluators stay hashable."""
  return tuple(_frozen(x) for x in v) if isinstance(v, list | tuple) else v


KINDS = {
  "pose3d": Pose3D,
  "viewpoint": Viewpoint,
  "uv2d": Uv2D,
  "calibration": Calibration,
  "labels": Labels,
}


def from_config(config) -> list:
  """The evaluators of `config.evaluators` ({name: options}); an unknown name or option is a
  ValueError naming it."""
  out = []
  for name, opts in (config.get("evaluators", None) or {}).items():
    if name not in KINDS:
      raise ValueError(f"config.evaluators.{name}: unknown evaluator; known: {sorted(KINDS)}")
    opts = dict(opts or {})
    fields = {f.name for f in dataclasses.fields(KINDS[name])}
    bad = sorted(set(opts) - fields)
    if bad:
      raise ValueError(
        f"config.evaluators.{name}: unknown option(s) {bad}; known: {sorted(fields)}"
      )
    out.append(KINDS[name](**{k: _frozen(v) for k, v in opts.items()}))
  return out


def merge(parts) -> metrics.Stats:
  dist, score = {}, {}
  for s in parts:
    if s is not None:
      dist.update(s.dist)
      score.update(s.score)
  return metrics.Stats(dist, score)


def make_stats_fn(method, evaluators, mesh):
  """jitted (params, extra, batch) -> the merged Stats of every evaluator (compiled once)."""

  def fn(params, extra, batch):
    pred = method.predict(params, extra, batch)
    return merge(e.stats(method, params, extra, pred, batch) for e in evaluators)

  return jax.jit(fn, out_shardings=sharding.replicated(mesh))


def evaluate(stats_fn, params, extra, batches, mesh) -> dict:
  """Exact dataset metrics over an iterable of per-host NumPy batches (padding masked; summed
  over batches and hosts)."""
  total = None
  for local in batches:
    s = stats_fn(params, extra, sharding.global_batch(local, mesh))
    total = s if total is None else total + s
  if total is None:
    return {}
  # The batches are global arrays and the statistics replicated: the sums are the dataset's.
  return metrics.finalize(jax.device_get(total))
