"""Data throughput: synthetic clip generation and the input pipeline.

  python -m handflow.bench.data [--clips=24] [--data_dir=/tmp/handflow_bench_tfds]

Generates the default synthetic_hands scene (4 frames x 8 views, 128 px crops) clip by clip and
reports clips/s and images/s; then builds a small dataset of that scene and measures the
training pipeline (pseudo-labels, crops, augmentation, batching) in clips/s and images/s.
Writes bench_results/data.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from configs import ust
from handflow.bench import common
from handflow.data import pipeline, prepare, synthetic


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=24)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  config = ust.get_config()
  scene = synthetic.SceneConfig()
  synthetic.generate_clip((9, 9, 0), scene)  # compile
  t0 = time.perf_counter()
  for i in range(args.clips):
    synthetic.generate_clip((9, 9, i + 1), scene)
  gen_s = (time.perf_counter() - t0) / args.clips
  imgs = scene.frames * scene.views
  rows = [dict(stage="generate clip", clips_s=1 / gen_s, images_s=imgs / gen_s)]

  with tempfile.TemporaryDirectory() as tmp:
    config.data.data_dir = args.data_dir or tmp
    config.data.clips = {"train": args.clips, "validation": 1, "test": 1}
    t0 = time.perf_counter()
    prepare.prepare(config)
    rows.append(
      dict(
        stage="prepare (TFDS build)",
        clips_s=args.clips / (time.perf_counter() - t0),
        images_s=args.clips * imgs / (time.perf_counter() - t0),
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
  path = common.write_json("data", {"machine": common.machine(), "rows": rows}, args.out)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
