"""FreiHAND-size evaluation: handflow's scorer against a straightforward NumPy loop.

  python -m handflow.bench.eval [--samples=3960]

Synthetic predictions and ground truth of FreiHAND's evaluation size (3,960 samples, 21 joints,
778 vertices) are scored with the FreiHAND protocol (MPJPE, PA-MPJPE, MPVPE, PA-MPVPE, AUCs,
F@5/F@15 aligned and unaligned): by `protocols.evaluate` in float64 (the scorer CLI's path)
and in float32 (the path inside training), and by a per-sample NumPy/scipy loop written like the
official scorer. Prints times and the largest difference between the results; writes
bench_results/eval.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.linalg import orthogonal_procrustes

from handflow.bench import common
from handflow.eval import metrics, protocols


def numpy_loop(pred_j, gt_j, pred_v, gt_v):
  """The official scorers' structure: one sample at a time, NumPy + scipy."""

  def align(gt, pred):
    t1, t2 = gt.mean(0), pred.mean(0)
    g, p = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(g) + 1e-8, np.linalg.norm(p) + 1e-8
    r, s = orthogonal_procrustes(g / s1, p / s2)
    return (p / s2) @ r.T * s * s1 + t1

  def fscore(a, b, t):
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    p, r = np.mean(d.min(1) < t), np.mean(d.min(0) < t)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0

  errs = {k: [] for k in ("MPJPE", "PA-MPJPE", "MPVPE", "PA-MPVPE")}
  fs = {k: [] for k in ("F@5", "F@15", "F@5_unaligned", "F@15_unaligned")}
  for pj, gj, pv, gv in zip(pred_j, gt_j, pred_v, gt_v, strict=True):
    aj, av = align(gj, pj), align(gv, pv)
    errs["MPJPE"].append(np.linalg.norm(pj - gj, axis=-1))
    errs["PA-MPJPE"].append(np.linalg.norm(aj - gj, axis=-1))
    errs["MPVPE"].append(np.linalg.norm(pv - gv, axis=-1))
    errs["PA-MPVPE"].append(np.linalg.norm(av - gv, axis=-1))
    for t, name in ((0.005, "F@5"), (0.015, "F@15")):
      fs[name].append(fscore(av, gv, t))
      fs[f"{name}_unaligned"].append(fscore(pv, gv, t))
  t = metrics.THRESHOLDS_M
  out = {}
  for k, v in errs.items():
    v = np.stack(v)  # [samples, points]
    out[k] = float(np.mean(v.mean(0)) * 1000)
    pck = np.stack([(v <= th).mean(0) for th in t], -1)
    out[f"AUC_{k}"] = float(np.mean(np.trapezoid(pck, t, axis=-1) / (t[-1] - t[0])))
  out.update({k: float(np.mean(v)) for k, v in fs.items()})
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--samples", type=int, default=3960)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  n = args.samples
  gt_j = rng.normal(0, 0.04, (n, 21, 3)) + [0.0, 0.0, 0.6]
  gt_v = rng.normal(0, 0.04, (n, 778, 3)) + [0.0, 0.0, 0.6]
  pred_j = gt_j + rng.normal(0, 0.008, gt_j.shape) + rng.normal(0, 0.01, (n, 1, 3))
  pred_v = gt_v + rng.normal(0, 0.008, gt_v.shape) + rng.normal(0, 0.01, (n, 1, 3))

  rows, results = [], {}
  for name, fn in (
    (
      "handflow float64 (scorer CLI)",
      lambda: protocols.evaluate("freihand", pred_j, gt_j, pred_v, gt_v),
    ),
    (
      "handflow float32",
      lambda: protocols.evaluate("freihand", pred_j, gt_j, pred_v, gt_v, float64=False),
    ),
    ("NumPy loop", lambda: numpy_loop(pred_j, gt_j, pred_v, gt_v)),
  ):
    t0 = time.perf_counter()
    results[name] = fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not name.startswith("NumPy"):
      fn()  # second call: compiled
    second = time.perf_counter() - t0 if not name.startswith("NumPy") else first
    rows.append({"impl": name, "first_s": first, "warm_s": second})
  ref = results["NumPy loop"]
  for r in rows:
    res = results[r["impl"]]
    r["max_abs_diff"] = max(abs(res[k] - ref[k]) for k in ref)
    r["speedup"] = rows[-1]["warm_s"] / r["warm_s"]
  print(f"FreiHAND protocol on {n} samples (21 joints, 778 vertices, F-scores included)")
  print(f"device: {common.machine()}\n")
  common.print_table(
    rows,
    [
      ("impl", "implementation", "{}"),
      ("first_s", "first call s", "{:.2f}"),
      ("warm_s", "warm s", "{:.2f}"),
      ("speedup", "x NumPy loop", "{:.1f}"),
      ("max_abs_diff", "max |diff| vs loop", "{:.2e}"),
    ],
  )
  print(
    "\n" + "\n".join(f"  {k}: {v:.4f}" for k, v in results["handflow float64 (scorer CLI)"].items())
  )
  path = common.write_json(
    "eval", {"machine": common.machine(), "samples": n, "rows": rows, "results": results}, args.out
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
