"""What a run reports: the test split scored once, against the untrained model and the teacher.

  results = write(config, workdir, method, trained, untrained, test_batches, evals, stats_fn,
                  mesh, calib_batches)

`trained` and `untrained` are (params, extra) pairs; `stats_fn` is the compiled statistics
(`eval.evaluators.make_stats_fn`) of the evaluators `evals`. One pass over the test split scores
both models (the same batches, no model choice made on them) and keeps its first batch for the
overlay.
Writes into the workdir (process 0; whole files or nothing):
- results.json: every metric of the trained and the untrained model (same seed, no training);
- results.md: the tables (a row per model and per extra row of the `pose3d` evaluator, a column
  per protocol metric, mm; per viewpoint bin with a `viewpoint` evaluator; 2D errors;
  calibration, with 3D radii chosen on `calib_batches`, the validation split, when given:
  `conformal`);
- overlay.png: the predicted mesh (shaded, semi-transparent) and skeleton, the ground truth's,
  and each joint's 2D hypotheses when the method has them, on test views (methods that predict
  a mesh); it and the method's figures also go to TensorBoard (`test/...`, last step);
- training_curve.png: the loss and its terms, and the periodic validation metric;
- the method's own figures (`method.figures(params, extra, batch) -> {file name: PNG}`, optional;
  CycleHand's cycle.png) on the first test batch.

Row names come from the method (`title`, `report_labels` {prefix: name}); columns from the
config's evaluators, so every method shares this report.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath

from handflow import files, sharding, writers
from handflow.data import detect, detected_labels, label_stats, pipeline, prepare
from handflow.eval import baselines, metrics, protocols
from handflow.eval import evaluators as evaluators_lib
from handflow.viz import figures

TEACHER = "teacher: pseudo-labels triangulated"
SPREAD_FRAMES = 2048  # test frames the articulation spread reads (the mean settles long before)
MEAN_HAND = "training images' mean hand (constant: PA metrics only)"

CALIB = ("calib/2d_50", "calib/2d_90", "calib/3d_50", "calib/3d_90")
LABELS = ("labels/wrong_downweighted", "labels/right_downweighted")


def _write(path: epath.Path, data: bytes):
  files.write_bytes(path, data)


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


_NOTES = {
  "hanco": "hanco: scale and root (middle MCP) aligned, as HaMuCo",
  "rootrel": "rootrel: wrist aligned",
  "freihand": "freihand: the official scorer's metrics (F@5 / F@15: aligned meshes)",
}


def _host_note() -> str:
  """Its training mean and test images are this host's share on a multi-host run."""
  return "" if jax.process_count() == 1 else " (this host's images)"


def _protocol_note(names) -> str:
  notes = [_NOTES[n] for n in names if n in _NOTES]
  return "; ".join(notes + ["PA: Procrustes. Rows other than the models give keypoints only "
                            "(no mesh)."])  # fmt: skip


def _viewpoint_table(view, trained, untrained) -> list[str]:
  """Rows: viewpoint bins; columns: the bin's share and the protocol's aligned metrics."""
  from handflow.geometry import viewpoint

  p = protocols.get(view.protocol)
  metrics_ = [m for m, kind in p.joints + p.vertices if kind == "procrustes"]
  metrics_ += [m for m, kind, _ in p.fscores if kind == "procrustes"]
  metrics_ += [f"AUC_{m}" for m, kind in p.joints if kind == "procrustes"]
  lines = [
    "",
    f"## By viewpoint (camera ray vs palm normal; {view.protocol}, mm; trained / untrained)",
    "",
    "| angle (deg) | share | " + " | ".join(metrics_) + " |",
    "|" + "---|" * (len(metrics_) + 2),
  ]
  for name in viewpoint.bin_names(view.bins):
    key = lambda m, name=name: (
      f"AUC_view/{name}/{m[4:]}" if m.startswith("AUC_") else f"view/{name}/{m}"
    )
    cells = [f"{_fmt(trained.get(key(m)), 2 if 'F@' in m or 'AUC' in m else 1)} / "
             f"{_fmt(untrained.get(key(m)), 2 if 'F@' in m or 'AUC' in m else 1)}"
             for m in metrics_]  # fmt: skip
    share = _fmt(trained.get(key("share")), 2)
    lines.append(f"| {name} | {share} | " + " | ".join(cells) + " |")
  return lines


def spread_table(spread) -> str:
  """The articulation spread of the ground truth and of the models (`articulation_spread`)."""
  if not spread:
    return ""
  lines = ["", "## Articulation spread (mm)", ""]
  lines += ["| keypoints | spread |", "|---|---|"]
  lines += [f"| {k} | {_fmt(v)} |" for k, v in spread.items()]
  lines += [
    "",
    "The mean Procrustes-aligned distance of each test frame's hand from the set's own mean "
    "hand: what articulation the keypoints show. A model that returns the same hand for every "
    "image has a spread near 0, whatever its PA-MPJPE.",
    "",
  ]
  return "\n".join(lines)


def tables(title, evals, trained: dict, untrained: dict, labels: dict, mean_hand=None) -> str:
  lines = []
  if not evals:
    lines += [
      "No test metric: this method predicts no hand (config.evaluators is empty). A pre-training"
      " run is scored by the fine-tuning it initialises (`handflow.stages`' comparison).",
      "",
    ]
  pose, cols = _pose_columns(evals)
  if pose is not None:
    rows = [(f"{title}, trained", trained, ""), (f"{title}, untrained", untrained, "")]
    rows += [(labels.get(p, p.rstrip("/")), trained, p) for p, _, _ in pose.rows if p]
    if mean_hand:
      rows.append((MEAN_HAND + _host_note(), mean_hand, ""))
    if pose.teacher:
      share = trained.get("teacher/full_hands")
      where = "" if share is None else f" ({share:.0%} of frames: all 21 joints in >= 2 views)"
      rows.append((f"{title}, trained, on the teacher's frames", trained, "teacher_frames/"))
      rows.append((TEACHER + where, trained, "teacher/"))
    lines += [
      "## Test split (mm)",
      "",
      "| model | " + " | ".join(f"{p} {m}" for p, m in cols) + " |",
      "|" + "---|" * (len(cols) + 1),
    ]
    for name, res, prefix in rows:
      cells = [_fmt(res.get(f"{prefix}{p}/{m}")) for p, m in cols]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", _protocol_note(pose.protocols)]
  view = next((e for e in evals if isinstance(e, evaluators_lib.Viewpoint)), None)
  if view is not None:
    lines += _viewpoint_table(view, trained, untrained)
  uv = sorted(k for k in trained if k.endswith("uv_err_px"))
  if uv:
    lines += ["", "## 2D error against the ground truth (crop pixels)", ""]
    lines += ["| output | trained | untrained |", "|---|---|---|"]
    for k in uv:
      name = "pseudo-labels (teacher), detected keypoints" if k.startswith("teacher/") else k
      lines.append(f"| {name} | {_fmt(trained[k], 2)} | {_fmt(untrained.get(k), 2)} |")
  versus = [
    ("all", "joints the teacher triangulates"),
    ("hard", "joints the teacher misses by > 20 mm"),
    ("no_teacher", "joints fewer than two views detected"),
  ]
  if any(f"versus/{k}/model" in trained for k, _ in versus):
    lines += ["", "## Model and teacher on the same joints (world frame, no alignment, mm)", ""]
    lines += ["| joints | model | teacher | model / teacher |", "|---|---|---|---|"]
    for key, name in versus:
      m, t = trained.get(f"versus/{key}/model"), trained.get(f"versus/{key}/teacher")
      ratio = m / t if m is not None and t else None
      lines.append(f"| {name} | {_fmt(m)} | {_fmt(t)} | {_fmt(ratio, 2)} |")
  labels_keys = [k for k in LABELS if k in trained]
  if labels_keys:
    lines += ["", "## Pseudo-labels the trained model down-weights (< half their confidence)", ""]
    lines += ["| labels | share |", "|---|---|"]
    for k in labels_keys:
      what = "wrong (> 10% of the hand's size off)" if "wrong" in k else "right (< 3% off)"
      lines.append(f"| {what} | {_fmt(trained[k], 3)} |")
  calib = [k for k in CALIB if k in trained]
  if calib:
    lines += [
      "",
      "## Uncertainty calibration (fraction of ground truth inside the predicted region)",
      "",
      "| region | trained | untrained | trained, radius chosen on validation (x RMS) | ideal |",
      "|---|---|---|---|---|",
    ]
    for k in calib:
      ideal = int(k[-2:]) / 100
      conf, scale = trained.get(f"{k}_conformal"), trained.get(f"{k}_scale")
      chosen = f"{conf:.3f} (x {scale:.2f})" if conf is not None else "–"
      lines.append(f"| {k[6:]}% | {trained[k]:.3f} | {untrained[k]:.3f} | {chosen} | {ideal} |")
    if any(f"{k}_conformal" in trained for k in calib):
      lines += [
        "",
        "3D regions are balls around the final keypoints. Their radius is the predicted RMS error "
        "scaled as for an isotropic Gaussian, or (last column) by the multiple that covers the "
        "level on the validation split (split conformal prediction).",
      ]
  return f"# {title}: test split, scored once\n\n" + "\n".join(lines) + "\n"


def _labels_name(config) -> str:
  pl = config.data.get("pseudo_labels", None)
  if pl is None:
    return "dataset's labels"
  simulated = f"simulated, preset {pl.get('preset', 'default')}"
  if pl.get("source", "simulated") != "mediapipe" or config.data.name != "synthetic_hands":
    return simulated
  split = pipeline.base_split(config.data.get("test_split", "test"))
  got = detected_labels.cached(prepare.dataset_builder(config), split)
  if got is None:
    return f"{simulated} (no MediaPipe environment)"
  return (
    f"MediaPipe {detect.MEDIAPIPE[0].split('==')[1]}; {got['missing_files']} of "
    f"{got['images']:,} label files missing, counted as missed detections"
  )


def stability(evals, rows: list, trained: dict) -> str:
  """The final test value against the best validation-time one (late divergence), and MPVPE
  against MPJPE."""
  pose, _ = _pose_columns(evals)
  if pose is None:
    return ""
  p = pose.protocols[0]
  key = f"{p}/MPJPE"
  name = f"eval/{key}"
  seen = [(r[name], r["step"]) for r in rows if np.isfinite(r.get(name, np.nan))]
  out = ["", "## Training stability", ""]
  if seen:
    best, step = min(seen)
    final = trained.get(key, float("nan"))
    out.append(
      f"- best validation {key} during training: {best:.1f} mm (step {step}); final test "
      f"{final:.1f} mm; ratio {final / best:.2f}"
    )
  mpvpe = trained.get(f"{p}/MPVPE")
  if mpvpe is not None and np.isfinite(mpvpe):
    out.append(f"- test {p} MPVPE / MPJPE: {mpvpe / trained[key]:.2f}")
  return "\n".join(out) + "\n" if len(out) > 3 else ""


def score_once(
  stats_fn, models: dict, batches, mesh, labels=None, keypoints=None, predict_fn=None, joints=None
):  # fmt: skip
  """{name: dataset metrics} of each (params, extra) in `models` over one pass of `batches`,
  and the first global batch (for figures). `labels`: a list that collects this host's real
  clips' (uv_pl, conf, uv) for the pseudo-label statistics; `keypoints`: one that collects
  this host's real frames' ground-truth keypoints [n, 21, 3]; `joints` ({name: list}, with
  `predict_fn`; one process only): the models' predicted keypoints of the same frames, for the
  first SPREAD_FRAMES of them."""
  totals, first = {}, None
  for local in batches:
    real = np.asarray(local["mask"]) > 0
    if labels is not None and "uv" in local:
      labels.append(tuple(np.asarray(local[k])[real] for k in ("uv_pl", "conf", "uv")))
    if keypoints is not None and "xyz" in local:
      keypoints.append(np.asarray(local["xyz"])[real].reshape(-1, 21, 3))
    batch = sharding.global_batch(local, mesh)
    first = batch if first is None else first
    read_joints = (
      joints is not None
      and "xyz" in local
      and sum(len(j) for j in next(iter(joints.values()))) < SPREAD_FRAMES
    )
    for name, (params, extra) in models.items():
      s = stats_fn(params, extra, batch)
      totals[name] = s if name not in totals else totals[name] + s
      if read_joints:
        pred = np.asarray(jax.device_get(predict_fn(params, extra, batch)["joints"]))
        joints[name].append(pred[real].reshape(-1, 21, 3))
  results = {name: metrics.finalize(jax.device_get(t)) for name, t in totals.items()}
  return results, first


def articulation_spread(gt_j, joints: dict, limit: int = SPREAD_FRAMES) -> dict:
  """{"ground truth" | name: mm} the articulation spread (`baselines.spread`) of the test
  frames' ground-truth keypoints gt_j [n, 21, 3] and of each model's predicted keypoints on the
  same frames (`joints` {name: [n', 21, 3]}, n' <= n: the first frames), at most `limit` frames;
  frames with hidden labels (the -1 sentinel) skipped. {} when fewer than two frames remain."""
  n = min([limit, len(gt_j)] + [len(j) for j in joints.values()])
  x = {"ground truth": gt_j[:n], **{k: j[:n] for k, j in joints.items()}}
  valid = ~np.all(x["ground truth"] == -1.0, axis=(-2, -1))
  if valid.sum() < 2:
    return {}
  return {k: baselines.spread(v[valid]) for k, v in x.items()}


def conformal(predict_fn, evals, trained, calib_batches, test_batches, mesh) -> dict:
  """`calib/3d_<level>_{scale,conformal}` of the trained model: the radii (multiples of the
  predicted RMS error) chosen on `calib_batches` (validation) and their coverage on test; {}
  without a 3D calibration evaluator."""
  calib = next((e for e in evals if isinstance(e, evaluators_lib.Calibration)), None)
  if calib is None or calib_batches is None:
    return {}
  r_val = evaluators_lib.ratios(predict_fn, *trained, calib_batches(), mesh)
  scales = evaluators_lib.conformal_scales(r_val, calib.levels)
  r_test = evaluators_lib.ratios(predict_fn, *trained, test_batches(), mesh)
  cover = evaluators_lib.coverage(r_test, scales)
  out = {}
  for lv in calib.levels:
    out[f"calib/3d_{round(lv * 100)}_scale"] = scales[lv]
    out[f"calib/3d_{round(lv * 100)}_conformal"] = cover[lv]
  return out


def write(
  config, workdir, method, trained, untrained, test_batches, evals, stats_fn, mesh,
  calib_batches=None, mean_hand=None,
) -> dict:  # fmt: skip
  """Scores the test split once and writes results.{json,md} and the figures. `mean_hand() ->
  [21, 3] | None`: the training images' Procrustes mean hand (`eval.baselines`), read only when
  a keypoint protocol is scored, then scored as a constant row beside the models (its
  Procrustes-aligned metrics only)."""
  workdir = epath.Path(workdir)
  predict_fn = jax.jit(method.predict)  # the conformal radii and the overlay share it
  collected, gt_j = [], []
  pose, _ = _pose_columns(evals)
  mean_hand = mean_hand() if mean_hand is not None and pose is not None else None
  # The articulation spread reads every model's keypoints in the scoring pass: on one process
  # only (a multi-host run's predictions are not all addressable here).
  joints = (
    {"trained": [], "untrained": []} if pose is not None and jax.process_count() == 1 else None
  )
  if evals:
    results, batch = score_once(
      stats_fn, {"trained": trained, "untrained": untrained}, test_batches(), mesh, collected,
      gt_j if pose is not None else None, predict_fn, joints,
    )  # fmt: skip
  else:  # nothing to score (pre-training): no pass over the test split
    results, batch = {"trained": {}, "untrained": {}}, None
  if gt_j and mean_hand is not None:
    results["mean_hand"] = baselines.constant_metrics(
      mean_hand, np.concatenate(gt_j), pose.protocols
    )
  if gt_j and joints and all(joints.values()):
    spread = articulation_spread(
      np.concatenate(gt_j), {k: np.concatenate(v) for k, v in joints.items()}
    )
    if spread:
      results["spread"] = spread
  if any(k.startswith("calib/3d_") for k in results["trained"]):
    c = conformal(predict_fn, evals, trained, calib_batches, test_batches, mesh)
    results["trained"].update(c)
  if jax.process_index() != 0:
    return results
  title = getattr(method, "title", config.method)
  text = tables(title, evals, results["trained"], results["untrained"],
                getattr(method, "report_labels", {}), results.get("mean_hand"))  # fmt: skip
  rows = writers.read_jsonl(workdir)
  text += spread_table(results.get("spread"))
  text += stability(evals, rows, results["trained"])
  if collected:
    stats = label_stats.statistics(*(np.concatenate(x) for x in zip(*collected, strict=True)))
    results["pseudo_labels"] = stats
    text += (
      "\n## The pseudo-labels of the test split (this host's clips; crop pixels)\n\n"
      + label_stats.table({_labels_name(config): stats})
      + "\n"
    )
  _write(workdir / "results.json", json.dumps(results, indent=1, sort_keys=True).encode())
  _write(workdir / "results.md", text.encode())
  print(text)
  pictures = {}
  if batch is not None and hasattr(method, "figures"):  # the method's own (CycleHand: cycle)
    pictures.update(method.figures(*trained, batch))
  pred = jax.device_get(predict_fn(*trained, batch)) if batch is not None else {}
  if "vertices" in pred:
    batch = jax.device_get(batch)
    caption = f"{title}: test clip 0, frame 0"
    pictures["overlay.png"] = figures.overlay_png(method.model, batch, pred, title=caption)
  for name, png in pictures.items():
    _write(workdir / name, png)
  if config.get("tensorboard", True):  # beside the curves, at the last step
    step = int(config.num_steps)
    writers.write_images(workdir, step, {f"test/{n[:-4]}": p for n, p in pictures.items()})
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
