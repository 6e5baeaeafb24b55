"""What 2D pseudo-labels look like against the ground truth: the numbers a detector is judged by.

  python -m handflow.data.label_stats --config=configs/ust.py [--split=validation] [--presets=...]

`statistics(uv_pl, conf, uv_gt)` over detections [..., 21, 2] (pixels of the dataset's images):
the fraction of views with a detection, per-keypoint error quantiles over detected keypoints,
the fraction off by more than 20 px, the mean confidence of right (< 10 px) and wrong (> 20 px)
keypoints, and the fraction of detections with the wrong handedness (the palm's 2D winding
wrist -> index MCP -> pinky MCP reversed, as a mirrored or thumb/pinky-flipped hand has it).
The CLI prints every simulated preset on the dataset's split beside `MEDIAPIPE_MEASURED`, the
figures the `mediapipe` preset is calibrated to.
"""

from __future__ import annotations

import numpy as np

from handflow.data import pseudo_labels

KEYS = (
  "detected", "err_mean_px", "err_median_px", "err_p90_px", "frac_over_20px", "conf_right",
  "conf_wrong", "wrong_handedness",
)  # fmt: skip


def _winding(uv):
  a, b = uv[..., 5, :] - uv[..., 0, :], uv[..., 17, :] - uv[..., 0, :]
  return np.sign(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])


def statistics(uv_pl, conf, uv_gt) -> dict:
  """uv_pl, uv_gt [..., 21, 2] pixels, conf [..., 21] (0: not detected) -> {KEYS: float}."""
  uv_pl, conf, uv_gt = (np.asarray(x, np.float64) for x in (uv_pl, conf, uv_gt))
  det_kp = conf > 0
  det_view = det_kp.any(-1)
  err = np.linalg.norm(uv_pl - uv_gt, axis=-1)[det_kp]
  c = conf[det_kp]
  nan = float("nan")
  q = lambda x, p: float(np.quantile(x, p)) if x.size else nan
  mean = lambda x: float(np.mean(x)) if x.size else nan
  wrong_hand = (_winding(uv_pl) != _winding(uv_gt))[det_view]
  return {
    "detected": float(np.mean(det_view)),
    "err_mean_px": mean(err),
    "err_median_px": q(err, 0.5),
    "err_p90_px": q(err, 0.9),
    "frac_over_20px": mean(err > 20.0),
    "conf_right": mean(c[err < 10.0]),
    "conf_wrong": mean(c[err > 20.0]),
    "wrong_handedness": mean(wrong_hand),
  }


def table(rows: dict[str, dict]) -> str:
  """Markdown: one row per source (name -> statistics)."""
  fmt = lambda v: "–" if v is None or not np.isfinite(v) else f"{v:.3g}"
  out = ["| labels | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
  for name, st in rows.items():
    out.append(f"| {name} | " + " | ".join(fmt(st.get(k)) for k in KEYS) + " |")
  return "\n".join(out)


def simulate_split(examples, det: pseudo_labels.DetectorConfig, key_fn):
  """Simulated labels for dataset examples (dicts with uv [t, v, 21, 2], visible, T_cam_world,
  clip_id), keyed by `key_fn(clip_id)` as the pipeline keys them -> (uv_pl, conf, uv_gt)."""
  outs = [
    pseudo_labels.simulate_clip(ex["uv"], ex["visible"], ex["T_cam_world"], det,
                                key_fn(ex["clip_id"]))
    for ex in examples
  ]  # fmt: skip
  stack = lambda xs: np.stack(list(xs))
  return (
    stack(o.uv for o in outs),
    stack(o.confidence for o in outs),
    stack(e["uv"] for e in examples),
  )


def main(argv):
  import tensorflow_datasets as tfds
  from absl import flags

  from handflow.data import pipeline, prepare

  config = flags.FLAGS.config
  split = flags.FLAGS.split
  builder = prepare.dataset_builder(config)
  if not builder.is_prepared():
    raise SystemExit(f"error: {config.data.name} is not built; run --mode=prepare first")
  ds = tfds.as_numpy(builder.as_dataset(split=split))
  keys = ("uv", "visible", "T_cam_world", "clip_id")
  examples = [{k: ex[k] for k in keys} for ex in ds]
  key_fn = lambda cid: pipeline.clip_key(config, split, cid)
  rows = {"MediaPipe 0.10.21 (measured)": dict(pseudo_labels.MEDIAPIPE_MEASURED)}
  for name in flags.FLAGS.presets:
    det = pseudo_labels.preset(name)
    rows[f"simulated: {name}"] = statistics(*simulate_split(examples, det, key_fn))
  print(f"{config.data.name} {split}: {len(examples)} clips, pixels of the dataset's images")
  print(table(rows))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", "configs/ust.py", "Experiment config (its data).")
  # Presets are calibrated here: on validation, so that nothing is chosen on the test split.
  flags.DEFINE_string("split", "validation", "Dataset split.")
  flags.DEFINE_list("presets", list(pseudo_labels.PRESETS), "Simulated presets to compare.")
  app.run(main)
