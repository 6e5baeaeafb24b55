"""Scores a submission file against ground truth and prints the field's table.

  python -m handflow.eval --protocol=freihand --pred=pred.json --gt=/data/FreiHAND_pub_v2
  python -m handflow.eval --protocol=ho3d_v2 --pred=pred.json --gt=gt.json
  python -m handflow.eval --protocol=dexycb --pred=results.txt --gt=gt.txt
  python -m handflow.eval --protocol=hanco --pred=pred.json --gt=gt.json --out=scores.json

--gt: for FreiHAND, the dataset root (evaluation_xyz.json, evaluation_verts.json) or a
`[xyz, verts]` JSON; for DexYCB a result-format text file; otherwise a `[xyz, verts]` JSON in
the protocol's order and frame. Writes the scores as JSON (default: next to --pred).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from handflow import files
from handflow.eval import protocols, submission


def load(protocol: protocols.Protocol, pred_path, gt_path):
  """(pred_joints, gt_joints, pred_verts, gt_verts) for the protocol's file formats."""
  if protocol.name == "dexycb":
    pi, pj = submission.read_dexycb(pred_path)
    gi, gj = submission.read_dexycb(gt_path)
    missing = np.setdiff1d(gi, pi)
    if missing.size:
      raise ValueError(f"{pred_path}: no prediction for image indices {missing[:5].tolist()}...")
    order = {int(i): k for k, i in enumerate(pi)}
    return pj[[order[int(i)] for i in gi]], gj, None, None
  pj, pv = submission.read_json_pair(pred_path)
  gt_path = pathlib.Path(gt_path)
  if protocol.name == "freihand" and gt_path.is_dir():
    gj, gv = submission.read_freihand_gt(gt_path)
  else:
    gj, gv = submission.read_json_pair(gt_path)
  return pj, gj, pv, gv


def format_table(protocol: protocols.Protocol, results: dict) -> str:
  rows = []
  for k in protocols.report_keys(protocol, results):
    v = results[k]
    unit = "" if k.startswith(("AUC", "F@")) else "mm"
    rows.append((k, f"{v:.4f}" if not unit else f"{v:.2f}", unit))
  w = max(len(r[0]) for r in rows)
  lines = [f"protocol {protocol.name}", f"{'metric'.ljust(w)}  value"]
  lines += [f"{k.ljust(w)}  {v} {u}".rstrip() for k, v, u in rows]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
    prog="python -m handflow.eval", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--protocol", required=True, choices=sorted(protocols.PRESETS))
  parser.add_argument("--pred", required=True, type=pathlib.Path)
  parser.add_argument("--gt", required=True, type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  protocol = protocols.get(args.protocol)
  out = args.out or args.pred.with_suffix(".scores.json")
  try:
    check_writable(out)
    pj, gj, pv, gv = load(protocol, args.pred, args.gt)
    results = protocols.evaluate(protocol, pj, gj, pv, gv)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_table(protocol, results))
  payload = {
    "protocol": protocol.name,
    "samples": len(pj),
    "pred": str(args.pred),
    "gt": str(args.gt),
    "results": results,
  }
  try:
    files.write_text_atomic(out, json.dumps(payload, indent=2) + "\n")
  except OSError as e:
    print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


def check_writable(path: pathlib.Path):
  """Raises ValueError unless `path` can be written (checked before any scoring)."""
  parent = path.parent if str(path.parent) else pathlib.Path(".")
  if path.is_dir():
    raise ValueError(f"--out {path} is a directory")
  if not parent.is_dir():
    raise ValueError(f"--out {path}: {parent} is not a directory")
  reason = files.unwritable(parent)
  if reason:
    raise ValueError(f"--out {path}: {reason}")


if __name__ == "__main__":
  sys.exit(main())
