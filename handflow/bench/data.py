"""Data throughput: synthetic clip generation and the input pipeline.

  python -m handflow.bench.data [--config=configs/ust.py] [--clips=24] [--data_dir=DIR]

Generates the default synthetic_hands scene (4 frames x 8 views, 128 px crops) clip by clip and
reports clips/s and images/s; then builds a small dataset of that scene and measures the
training pipeline (pseudo-labels, crops, augmentation, batching) in clips/s and images/s.
Writes bench_results/data.json.
"""

from __future__ import annotations

import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from handflow.bench import common
from handflow.data import pipeline, prepare, synthetic, synthetic_hands

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ust.py", "Experiment config.")
_CLIPS = flags.DEFINE_integer("clips", 24, "Clips to generate and to build.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to build (default: a temporary dir).")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")


def main(argv):
  del argv
  config = _CONFIG.value
  n_clips = _CLIPS.value
  scene = synthetic_hands.config_from(config.data).scene
  synthetic.generate_clip((9, 9, 0), scene)  # compile
  t0 = time.perf_counter()
  for i in range(n_clips):
    synthetic.generate_clip((9, 9, i + 1), scene)
  gen_s = (time.perf_counter() - t0) / n_clips
  imgs = scene.frames * scene.views
  rows = [dict(stage="generate clip", clips_s=1 / gen_s, images_s=imgs / gen_s)]

  with tempfile.TemporaryDirectory() as tmp:
    config.data.data_dir = _DATA_DIR.value or tmp
    config.data.clips = {"train": n_clips, "validation": 1, "test": 1}
    t0 = time.perf_counter()
    prepare.prepare(config)
    rows.append(
      dict(
        stage="prepare (TFDS build)",
        clips_s=n_clips / (time.perf_counter() - t0),
        images_s=n_clips * imgs / (time.perf_counter() - t0),
      )
    )
    it = pipeline.batches(config, "train", train=True)
    next(it)
    n, t0 = 20, time.perf_counter()
    for _ in range(n):
      next(it)
    sec = (time.perf_counter() - t0) / (n * config.batch_size)
    rows.append(dict(stage="train pipeline", clips_s=1 / sec, images_s=imgs / sec))
  print(f"scene: {scene}; batch {config.batch_size}; device: {common.machine()}\n")
  common.print_table(
    rows,
    [
      ("stage", "stage", "{}"),
      ("clips_s", "clips/s", "{:.1f}"),
      ("images_s", "images/s", "{:,.0f}"),
    ],
  )
  path = common.write_json("data", {"machine": common.machine(), "rows": rows}, _OUT.value)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  app.run(main)
