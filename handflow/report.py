"""What a run reports: the test split scored once, against the untrained model and the teacher.

  results = write(config, workdir, method, trained, untrained, test_batches, evals, stats_fn,
                  mesh)

`trained` and `untrained` are (params, extra) pairs; `stats_fn` is the compiled statistics
(`eval.evaluators.make_stats_fn`) of the evaluators `evals`. One pass over the test split scores
both models (the same batches, no model choice made on them) and keeps its first batch for the
overlay.
Writes into the workdir (process 0; whole files or nothing):
- results.json: every metric of the trained and the untrained model (same seed, no training);
- results.md: the tables (a row per model and per extra row of the `pose3d` evaluator, a column
  per protocol metric, mm; 2D errors; calibration);
- overlay.png: the predicted mesh and keypoints (and the ground truth's) on test views, with each
  joint's 2D hypotheses when the method has them (methods that predict a mesh);
- training_curve.png: the loss and its terms, and the periodic validation metric.

Row names come from the method (`title`, `report_labels` {prefix: name}); columns from the
config's evaluators, so every method shares this report.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from handflow import files, sharding, writers
from handflow.eval import evaluators as evaluators_lib
from handflow.eval import metrics, protocols
from handflow.viz import figures

TEACHER = "teacher: pseudo-labels triangulated"
CALIB = ("calib/2d_50", "calib/2d_90", "calib/3d_50", "calib/3d_90")


def _write(path: epath.Path, data: bytes):
  if str(path).startswith(("gs://", "s3://")):
    path.write_bytes(data)  # object stores: an upload appears whole
  else:
    files.write_atomic(path, lambda f: f.write(data))


def _fmt(v, digits=1):
  return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _pose_columns(evals):
  pose = next((e for e in evals if isinstance(e, evaluators_lib.Pose3D)), None)
  if pose is None:
    return None, []
  cols = []
  for name in pose.protocols:
    p = protocols.get(name)
    cols += [(name, m) for m, _ in p.joints + p.vertices] + [(name, m) for m, _, _ in p.fscores]
  return pose, cols


def tables(title, evals, trained: dict, untrained: dict, labels: dict) -> str:
  lines = []
  pose, cols = _pose_columns(evals)
  if pose is not None:
    rows = [(f"{title}, trained", trained, ""), (f"{title}, untrained", untrained, "")]
    rows += [(labels.get(p, p.rstrip("/")), trained, p) for p, _, _ in pose.rows if p]
    if pose.teacher:
      rows.append((TEACHER, trained, "teacher/"))
    lines += [
      "## Test split (mm)",
      "",
      "| model | " + " | ".join(f"{p} {m}" for p, m in cols) + " |",
      "|" + "---|" * (len(cols) + 1),
    ]
    for name, res, prefix in rows:
      cells = [_fmt(res.get(f"{prefix}{p}/{m}")) for p, m in cols]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
      "",
      "hanco: scale and root (middle MCP) aligned, as HaMuCo; rootrel: wrist aligned. "
      "PA: Procrustes. Rows other than the models give keypoints only (no mesh).",
    ]
  uv = sorted(k for k in trained if k.endswith("uv_err_px"))
  if uv:
    lines += ["", "## 2D error against the ground truth (crop pixels)", ""]
    lines += ["| output | trained | untrained |", "|---|---|---|"]
    for k in uv:
      name = "pseudo-labels (teacher), detected keypoints" if k.startswith("teacher/") else k
      lines.append(f"| {name} | {_fmt(trained[k], 2)} | {_fmt(untrained.get(k), 2)} |")
  calib = [k for k in CALIB if k in trained]
  if calib:
    lines += [
      "",
      "## Uncertainty calibration (fraction of ground truth inside the hypotheses' region)",
      "",
      "| region | trained | untrained | ideal |",
      "|---|---|---|---|",
    ]
    for k in calib:
      ideal = int(k[-2:]) / 100
      lines.append(f"| {k[6:]}% | {trained[k]:.3f} | {untrained[k]:.3f} | {ideal} |")
  return f"# {title}: test split, scored once\n\n" + "\n".join(lines) + "\n"


def score_once(stats_fn, models: dict, batches, mesh):
  """{name: dataset metrics} of each (params, extra) in `models` over one pass of `batches`,
  and the first global batch (for figures)."""
  totals, first = {}, None
  for local in batches:
    batch = sharding.global_batch(local, mesh)
    first = batch if first is None else first
    for name, (params, extra) in models.items():
      s = stats_fn(params, extra, batch)
      totals[name] = s if name not in totals else totals[name] + s
  results = {name: metrics.finalize(jax.device_get(t)) for name, t in totals.items()}
  return results, first


def write(config, workdir, method, trained, untrained, test_batches, evals, stats_fn, mesh) -> dict:
  workdir = epath.Path(workdir)
  results, batch = score_once(
    stats_fn, {"trained": trained, "untrained": untrained}, test_batches(), mesh
  )
  if jax.process_index() != 0:
    return results
  title = getattr(method, "title", config.method)
  text = tables(title, evals, results["trained"], results["untrained"],
                getattr(method, "report_labels", {}))  # fmt: skip
  _write(workdir / "results.json", json.dumps(results, indent=1, sort_keys=True).encode())
  _write(workdir / "results.md", text.encode())
  print(text)
  pred = jax.device_get(jax.jit(method.predict)(*trained, batch))
  if "vertices" in pred:
    batch = jax.device_get(batch)
    caption = f"{title}: test clip 0, frame 0"
    _write(workdir / "overlay.png", figures.overlay_png(method.model, batch, pred, title=caption))
  rows = writers.read_jsonl(workdir)
  if rows:
    pose, _ = _pose_columns(evals)
    if pose is not None:
      p0 = pose.protocols[0]
      curves = [(f"eval/{p}/MPJPE", f"{title} {p} MPJPE") for p in pose.protocols]
      ref = (f"teacher/{p0}/MPJPE", f"teacher {p0} MPJPE") if pose.teacher else None
    else:
      curves = [("eval/uv_err_px", f"{title} 2D error (px)")]
      ref = ("teacher/uv_err_px", "teacher 2D error (px)")
    png = figures.curve_png(rows, results["trained"], curves, ref)
    _write(workdir / "training_curve.png", png)
  return results
