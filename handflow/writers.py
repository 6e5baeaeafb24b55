"""Metrics to the workdir: one JSON line per logged step, TensorBoard events, progress lines.

Only process 0 writes (every process may call). `metrics.jsonl` holds every logged metric with
its step, each step once: a run resumed from the checkpoint of step S first drops the rows
after S that the interrupted run had written (on storage without appends, such as GCS, each run
segment writes its own `metrics-<time>.jsonl` that opens with a {"resume_step": S} row, and
`read_jsonl` reads them all in order, dropping the superseded rows); TensorBoard events go to
`tb/` (a resumed run opens a new events file: its steps after S are not removed from the old
one, so TensorBoard can show them twice; `metrics.jsonl` and the report's curves are the record).
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
  def __init__(self, workdir, *, tensorboard: bool = True, start_step: int = 0):
    self.active = jax.process_index() == 0
    self.workdir = epath.Path(workdir)
    self._tb = None
    if self.active:
      self.workdir.mkdir(parents=True, exist_ok=True)
      path = self.workdir / "metrics.jsonl"
      try:
        if path.exists():
          _drop_after(path, start_step)
        self._jsonl = path.open("a")
      except Exception:  # noqa: BLE001 - no append on this filesystem: one file per segment.
        self._jsonl = (self.workdir / f"metrics-{int(time.time())}.jsonl").open("w")
        self._jsonl.write(json.dumps({"resume_step": int(start_step)}) + "\n")
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


def write_images(workdir, step: int, images: dict):
  """PNG figures {name: bytes} to the workdir's TensorBoard events (process 0 only)."""
  if jax.process_index() != 0 or not images:
    return
  import tensorflow as tf

  writer = tf.summary.create_file_writer(str(epath.Path(workdir) / "tb"))
  with writer.as_default(step=int(step)):
    for name, png in images.items():
      tf.summary.image(name, tf.image.decode_png(png, channels=3)[None])
  writer.close()


def _drop_after(path, step: int):
  """Rewrites `path` without its rows after `step` (those an interrupted run wrote past its
  last checkpoint), atomically; untouched when there are none."""
  from handflow import files

  lines = [ln for ln in path.read_text().splitlines() if ln]
  keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
  if len(keep) < len(lines):
    files.write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def read_jsonl(path) -> list[dict]:
  """Rows of a metrics file, or of all metrics*.jsonl in a workdir (in time order), each
  step's rows once: a {"resume_step": S} row drops the earlier rows after S."""
  path = epath.Path(path)
  files = sorted(path.glob("metrics*.jsonl")) if path.is_dir() else [path]
  rows = []
  for f in files:
    for line in f.read_text().splitlines():
      if not line:
        continue
      row = json.loads(line)
      if "resume_step" in row:
        rows = [r for r in rows if r["step"] <= row["resume_step"]]
      else:
        rows.append(row)
  return rows


def headline(results: dict, n: int = 4) -> str:
  """The first few metrics of an evaluation, mean errors first, for a console line."""
  keys = sorted(results, key=lambda k: (not k.endswith("MPJPE"), "AUC" in k, k))
  shown = [f"{k} {float(results[k]):.4g}" for k in keys[:n]]
  return ", ".join(shown) + (f" (+{len(keys) - n} in metrics.jsonl)" if len(keys) > n else "")


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

  def line(self, text: str):
    """One line of its own (ends an updating progress line first)."""
    if self.active:
      print(("\n" if self.tty else "") + text, file=self.stream, flush=True)

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
