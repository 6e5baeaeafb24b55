"""Timing, a measured matmul peak, tables and JSON results shared by the benchmarks."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.data import crops
from handflow.hand import conventions


def time_fn(fn: Callable[[], object], *, min_time_s: float = 1.0, min_reps: int = 5) -> float:
  """Best seconds per call of `fn` (which must block until its result is ready).

  The minimum over repetitions estimates the cost without interference from other work on the
  machine (shared CPUs here vary 2x between runs); every benchmark applies it to handflow and to
  the reference alike. One warm-up call first (compilation is reported separately).
  """
  fn()
  times = []
  start = time.perf_counter()
  while len(times) < min_reps or time.perf_counter() - start < min_time_s:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if len(times) >= 1000:
      break
  return min(times)


def time_interleaved(fns: dict[str, Callable[[], object]], *, rounds: int = 7, reps: int = 3):
  """Best seconds per call of each fn, measured in alternating rounds.

  Alternating makes slow phases of a shared machine hit every contender alike, so that ratios
  between them (handflow vs a reference library) are fair.
  """
  best = dict.fromkeys(fns, float("inf"))
  for fn in fns.values():
    fn()  # warm-up / compilation
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best[name] = min(best[name], time.perf_counter() - t0)
  return best


def jax_flops(jitted, *args) -> float:
  """FLOPs of one call of a jitted function, from XLA's cost analysis."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, list | tuple):  # older JAX returns one dict per computation.
    cost = cost[0]
  return float(cost.get("flops", 0.0)) if cost else 0.0


def matmul_peak_gflops(n: int = 2048) -> float:
  """Measured float32 GEMM throughput of this device (GFLOP/s), the roofline's compute roof."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  sec = time_fn(lambda: f(a, b).block_until_ready(), min_time_s=1.0)
  return 2 * n**3 / sec / 1e9


def machine() -> dict:
  dev = jax.devices()[0]
  return {
    "platform": dev.platform,
    "device": getattr(dev, "device_kind", str(dev)),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "python": platform.python_version(),
  }


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]):
  """columns: (key, header, format) e.g. ("meshes_s", "meshes/s", "{:,.0f}")."""
  cells = [[h for _, h, _ in columns]]
  for r in rows:
    cells.append(["" if r.get(k) is None else fmt.format(r[k]) for k, _, fmt in columns])
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  for i, line in enumerate(cells):
    print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    if i == 0:
      print("  ".join("-" * w for w in widths))


def write_json(name: str, payload: dict, out: str | None = None) -> pathlib.Path:
  path = pathlib.Path(out or f"bench_results/{name}.json")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(payload, indent=2) + "\n")
  return path


def crop_hands(model, n: int, size: int, seed: int = 0):
  """n plausible hands 0.4 m in front of the camera, each in a size^2 crop framed as the input
  pipeline frames one (a square `crops.MARGIN` times the keypoints' bounding box, `crops.geometry`):
  (keypoints [n, 21, 3], vertices [n, v, 3] in the camera frame, the crops' K [n, 3, 3])."""
  rng = np.random.default_rng(seed)
  axis = rng.normal(size=(n, 3))
  orient = axis / np.linalg.norm(axis, axis=-1, keepdims=True) * rng.uniform(0, np.pi, (n, 1))
  out = hand.forward(
    model,
    jnp.asarray(rng.normal(0, 0.2, (n, 45)), jnp.float32),
    global_orient=jnp.asarray(orient, jnp.float32),
  )  # any view, as the data
  kp = np.asarray(conventions.keypoints(model, out.vertices, out.joints, "openpose"))
  centre = kp.mean(1, keepdims=True) - np.array([0, 0, 0.4])
  xyz, verts = kp - centre, np.asarray(out.vertices) - centre
  xy = xyz[..., :2] / xyz[..., 2:]  # normalised image coordinates
  lo, hi = xy.min(1), xy.max(1)
  f = size / (crops.MARGIN * (hi - lo).max(-1))  # [n]
  c = (size - 1) / 2 - f[:, None] * (lo + hi) / 2  # [n, 2]
  K = np.zeros((n, 3, 3), np.float32)
  K[:, 0, 0], K[:, 1, 1], K[:, :2, 2], K[:, 2, 2] = f, f, c, 1.0
  return xyz, verts, K


def single_image_batch(config, model, n: int, size: int, seed: int = 0) -> dict:
  """n random images with a plausible hand 0.4 m in front of the camera (`crop_hands`)."""
  rng = np.random.default_rng(seed + 1)
  xyz, _, K = crop_hands(model, n, size, seed)
  uv = xyz[..., :2] / xyz[..., 2:] * K[:, None, [0, 1], [0, 1]] + K[:, None, :2, 2]
  return {
    "images": jnp.asarray(rng.normal(size=(n, 1, 1, size, size, 3)), jnp.float32),
    "K": jnp.asarray(K)[:, None, None],
    "T_cam_world": jnp.broadcast_to(jnp.eye(4), (n, 1, 1, 4, 4)),
    "xyz": jnp.asarray(xyz[:, None], jnp.float32),
    "uv": jnp.asarray(uv[:, None, None], jnp.float32),
    "hand_mask": jnp.asarray(rng.uniform(size=(n, 1, 1, size, size)) > 0.5, jnp.float32),
    "image_id": jnp.arange(n),
    "mask": jnp.ones((n,)),
  }
