"""Metrics to the workdir: one JSON line per logged step, TensorBoard events, progress lines.

Only process 0 writes (every process may call). `metrics.jsonl` holds every logged metric with
its step (on storage without appends, such as GCS, each run segment writes its own
`metrics-<time>.jsonl`; `read_jsonl` reads them all in order); TensorBoard events go to `tb/`.
The workdir may be local or remote (`gs://...`, through etils.epath).
Progress: a single updating line on a terminal, plain periodic lines otherwise (logs, CI), with
step rate and ETA; compile time is reported apart from step time.
"""

from __future__ import annotations

import json
import math
import sys
import time

import jax
import numpy as np
from etils import epath


class MetricWriter:
  def __init__(self, workdir, *, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.workdir = epath.Path(workdir)
    self._tb = None
    if self.active:
      self.workdir.mkdir(parents=True, exist_ok=True)
      try:
        self._jsonl = (self.workdir / "metrics.jsonl").open("a")
      except Exception:  # noqa: BLE001 - no append on this filesystem: one file per segment.
        self._jsonl = (self.workdir / f"metrics-{int(time.time())}.jsonl").open("w")
      if tensorboard:
        import tensorflow as tf  # TF is a dependency already (tf.data); imported lazily.

        self._tb = tf.summary.create_file_writer(str(self.workdir / "tb"))

  def write(self, step: int, metrics: dict):
    """Scalars only; NumPy/JAX scalars are fetched here (after the step was dispatched)."""
    if not self.active:
      return
    clean = {}
    for k, v in metrics.items():
      v = float(np.asarray(v))
      clean[k] = v if math.isfinite(v) else str(v)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      import tensorflow as tf

      with self._tb.as_default(step=int(step)):
        for k, v in clean.items():
          if isinstance(v, float):
            tf.summary.scalar(k, v)
      self._tb.flush()

  def close(self):
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def read_jsonl(path) -> list[dict]:
  """Rows of a metrics file, or of all metrics*.jsonl in a workdir (in time order)."""
  path = epath.Path(path)
  files = sorted(path.glob("metrics*.jsonl")) if path.is_dir() else [path]
  return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


class Progress:
  """Step rate and ETA; `tick(step)` after each step, `compiled(seconds)` once."""

  def __init__(self, total_steps: int, start_step: int = 0, every_s: float = 10.0, stream=None):
    self.total, self.start = total_steps, start_step
    self.every_s = every_s
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.t0 = self.last = time.perf_counter()
    self.active = jax.process_index() == 0

  def compiled(self, seconds: float):
    if self.active:
      print(f"compiled the train step in {seconds:.1f} s", file=self.stream, flush=True)
    self.t0 = self.last = time.perf_counter()

  def rate(self, step: int) -> float:
    done = step - self.start
    return done / max(time.perf_counter() - self.t0, 1e-9)

  def tick(self, step: int, extra: str = ""):
    now = time.perf_counter()
    if not self.active or (not self.tty and now - self.last < self.every_s and step < self.total):
      return
    self.last = now
    rate = self.rate(step)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    line = f"step {step}/{self.total}  {rate:.2f} steps/s  ETA {eta:.0f} s  {extra}".rstrip()
    if self.tty:
      print("\r" + line, end="" if step < self.total else "\n", file=self.stream, flush=True)
    else:
      print(line, file=self.stream, flush=True)
