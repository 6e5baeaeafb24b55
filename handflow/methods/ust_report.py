"""What a UST-Hand run reports: test metrics against baselines, calibration, figures.

  results = report(config, workdir, method, params, init_params, eval_batches, mesh)

writes into the workdir (process 0; whole files or nothing):
- results.json: every metric of the trained model, the untrained model (same seed, no
  training), the triangulated stage-1 modes and the teacher (triangulated pseudo-labels);
- results.md: the tables (HanCo and root-relative protocols, mm; calibration; 2D errors);
- overlay.png: predicted mesh and keypoints (and the ground truth's) on test images of one
  clip, several views, with each joint's 2D hypotheses;
- training_curve.png: loss terms and the periodic test MPJPE against the teacher's.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from handflow import files, sharding, train, writers
from handflow.viz import figures

COLUMNS = [(p, m) for p in ("hanco", "rootrel") for m in ("MPJPE", "MPVPE", "PA-MPJPE", "PA-MPVPE")]


def _write(path: epath.Path, data: bytes):
  if str(path).startswith(("gs://", "s3://")):
    path.write_bytes(data)  # object stores: an upload appears whole
  else:
    files.write_atomic(path, lambda f: f.write(data))


def _row(name, results, prefix=""):
  cells = []
  for proto, metric in COLUMNS:
    v = results.get(f"{prefix}{proto}/{metric}")
    cells.append("–" if v is None or not np.isfinite(v) else f"{v:.1f}")
  return f"| {name} | " + " | ".join(cells) + " |"


def tables(trained: dict, untrained: dict) -> str:
  head = "| model | " + " | ".join(f"{p} {m}" for p, m in COLUMNS) + " |"
  lines = [
    "## Test split (mm)",
    "",
    head,
    "|" + "---|" * (len(COLUMNS) + 1),
    _row("UST-Hand, trained", trained),
    _row("UST-Hand, untrained", untrained),
    _row("stage-1 modes triangulated, trained", trained, "stage1/"),
    _row("teacher: pseudo-labels triangulated", trained, "teacher/"),
    "",
    "hanco: scale and root (middle MCP) aligned, as HaMuCo; rootrel: wrist aligned. "
    "PA: Procrustes. The teacher and stage 1 give keypoints only (no mesh).",
  ]
  calib = [k for k in ("calib/2d_50", "calib/2d_90", "calib/3d_50", "calib/3d_90") if k in trained]
  if calib:
    lines += [
      "",
      "## Uncertainty calibration (fraction of ground truth inside the hypotheses' region)",
      "",
      "| region | trained | untrained | ideal |",
      "|---|---|---|---|",
    ]
    for k in calib:
      lines.append(f"| {k[6:]}% | {trained[k]:.3f} | {untrained[k]:.3f} | {int(k[-2:]) / 100} |")
  lines += [
    "",
    "## 2D error against the ground truth (crop pixels)",
    "",
    f"- stage-1 mode, trained: {trained.get('stage1/uv_err_px', float('nan')):.2f}",
    f"- stage-1 mode, untrained: {untrained.get('stage1/uv_err_px', float('nan')):.2f}",
    "- pseudo-labels (teacher), detected keypoints: "
    f"{trained.get('teacher/uv_err_px', float('nan')):.2f}",
  ]
  return "\n".join(lines) + "\n"


def report(config, workdir, method, params, init_params, eval_batches, mesh) -> dict:
  workdir = epath.Path(workdir)
  stats_fn = train.make_eval_stats(method, mesh)
  trained = train.evaluate(stats_fn, params, eval_batches, mesh)
  untrained = train.evaluate(stats_fn, init_params, eval_batches, mesh)
  results = {"trained": trained, "untrained": untrained}
  if jax.process_index() != 0:
    return results
  text = tables(trained, untrained)
  _write(workdir / "results.json", json.dumps(results, indent=1, sort_keys=True).encode())
  _write(workdir / "results.md", text.encode())
  print(text)
  batch = sharding.global_batch(next(iter(eval_batches())), mesh)
  pred = jax.device_get(jax.jit(method.predict)(params, batch))
  batch = jax.device_get(batch)
  title = f"{config.method}: test clip 0, frame 0"
  _write(workdir / "overlay.png", figures.overlay_png(method.model, batch, pred, title=title))
  rows = writers.read_jsonl(workdir)
  if rows:
    _write(workdir / "training_curve.png", figures.curve_png(rows, trained))
  return results
