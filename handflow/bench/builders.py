"""Building real benchmarks without holding them in memory: FreiHAND's mesh file, streamed.

  python -m handflow.bench.builders [--meshes=4000] [--images=400]

FreiHAND ships its 32,560 training meshes as one ~1 GB JSON array; `json.load` turns it into
Python lists of ~76 M floats. The builder streams it instead (`manual.iter_json_array`). This
writes a mesh file of `--meshes` FreiHAND-shaped entries (778 x 3, six decimals, as released),
then, in the same run, reads it with `json.load` (the reference) and with the stream, reporting
time and peak Python memory (tracemalloc) and extrapolating both to the full file. Then it
builds a FreiHAND-layout directory of `--images` annotations (x 4 versions, 224 px JPEGs) with
the TFDS builder and reports examples/s and the build's peak memory. Writes
bench_results/builders.json.
"""

from __future__ import annotations

import gc
import json
import pathlib
import tempfile
import time
import tracemalloc

import numpy as np
from absl import app, flags

from handflow.bench import common
from handflow.data import freihand, manual

_MESHES = flags.DEFINE_integer("meshes", 4000, "Meshes in the generated mesh file.")
_IMAGES = flags.DEFINE_integer("images", 400, "Annotations in the generated FreiHAND directory.")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")


def _write_meshes(path: pathlib.Path, n: int, rng):
  with open(path, "w") as fh:
    fh.write("[")
    for i in range(n):
      v = rng.normal(0, 0.03, (manual.NUM_VERTS, 3)) + [0, 0, 0.6]
      fh.write(("," if i else "") + json.dumps(np.round(v, 6).tolist()))
    fh.write("]")


def _measure(fn):
  gc.collect()
  tracemalloc.start()
  t0 = time.perf_counter()
  fn()
  sec = time.perf_counter() - t0
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return sec, peak


def _write_freihand(root: pathlib.Path, n: int, rng):
  import tensorflow as tf

  for prefix, count, versions in (("training", n, 4), ("evaluation", 1, 1)):
    K = np.broadcast_to([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]], (count, 3, 3))
    docs = {
      "K": K,
      "xyz": rng.normal(0, 0.03, (count, 21, 3)) + [0, 0, 0.6],
      "scale": np.full(count, 0.03),
      "mano": np.zeros((count, 1, 61)),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, a in docs.items():
      (root / f"{prefix}_{key}.json").write_text(json.dumps(np.asarray(a).tolist()))
    _write_meshes(root / f"{prefix}_verts.json", count, rng)
    (root / prefix / "rgb").mkdir(parents=True)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).numpy()
    for i in range(count * versions):
      (root / prefix / "rgb" / f"{i:08d}.jpg").write_bytes(jpeg)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n = _MESHES.value
  full = freihand.TRAIN_ANNOTATIONS
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "training_verts.json"
    _write_meshes(path, n, rng)
    mb = path.stat().st_size / 2**20
    streamed = lambda: sum(1 for _ in manual.iter_json_array(path, "bench"))
    for name, fn in (
      ("json.load (reference)", lambda: json.loads(path.read_text())),
      ("streamed", streamed),
    ):
      sec, peak = _measure(fn)
      rows.append(
        dict(
          reader=name,
          file_mb=mb,
          meshes_s=n / sec,
          peak_mb=peak / 2**20,
          full_peak_gb=peak / 2**30 * (full / n if "reference" in name else 1),
        )
      )
    root = pathlib.Path(tmp) / "FreiHAND"
    _write_freihand(root, _IMAGES.value, rng)
    config = freihand.FreihandConfig.make(subset=True)
    builder = freihand.Freihand(config=config, data_dir=str(pathlib.Path(tmp) / "tfds"))
    import tensorflow_datasets as tfds

    dl = tfds.download.DownloadConfig(manual_dir=str(root))
    sec, peak = _measure(lambda: builder.download_and_prepare(download_config=dl))
    examples = 4 * _IMAGES.value + 1
    build = dict(examples=examples, examples_s=examples / sec, peak_mb=peak / 2**20)
  print(f"{n} FreiHAND-shaped meshes ({mb:.0f} MB of JSON); device: {common.machine()}\n")
  common.print_table(
    rows,
    [
      ("reader", "reader", "{}"),
      ("meshes_s", "meshes/s", "{:,.0f}"),
      ("peak_mb", "peak MB", "{:,.1f}"),
      ("full_peak_gb", f"peak GB at {full:,} meshes", "{:.2f}"),
    ],
  )
  ratio = rows[0]["peak_mb"] / rows[1]["peak_mb"]
  speed = rows[1]["meshes_s"] / rows[0]["meshes_s"]
  print(f"\nstreamed / json.load: {1 / ratio:.4f}x the peak memory, {speed:.2f}x the speed")
  print(
    f"FreiHAND build ({build['examples']} examples of 224 px): {build['examples_s']:.0f} "
    f"examples/s, peak Python memory {build['peak_mb']:.0f} MB"
  )
  out = {"machine": common.machine(), "meshes": n, "rows": rows, "build": build}
  print(f"\nwrote {common.write_json('builders', out, _OUT.value)}")


if __name__ == "__main__":
  app.run(main)
