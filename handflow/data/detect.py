"""Real 2D pseudo-labels: MediaPipe's hand landmarker over a dataset's images, written as the
OpenPose JSON every builder reads (`rgb_2D_keypoints/` of the dataset root, see `manual`).

  python -m handflow.data.detect --dataset=hanco --manual_dir=/data/HanCo
  python -m handflow.data.detect --dataset=freihand --manual_dir=/data/FreiHAND --limit=100
  python -m handflow.data.detect --setup    # only create the environment (the README's set-up)

Optional and isolated: mediapipe==0.10.21 is the last wheel that ships its hand models, and it
needs numpy<2, so the detector runs in its own virtual environment (`--venv`, created with pip
on first use: the one step that needs the network; nothing else in handflow imports MediaPipe).
Images whose labels exist are skipped (rerun to resume; `--overwrite` redoes them). Then
`--mode=prepare` builds the dataset with these labels as `uv_pl` / `conf`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from handflow.data import manual

MEDIAPIPE = ("mediapipe==0.10.21", "numpy<2")
DEFAULT_VENV = pathlib.Path("~/.cache/handflow/mediapipe-0.10.21").expanduser()
WORKER = pathlib.Path(__file__).with_name("mediapipe_worker.py")


def _sorted_glob(root: pathlib.Path, pattern: str):
  return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))


def images(dataset: str, root: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """[(image, where its labels go)] of a dataset in its official layout."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise manual.ManualDataError(f"{dataset}: manual_dir {root} does not exist")
  if dataset == "hanco":
    from handflow.data import hanco

    sequences, _ = hanco.scan(root, subset=True)
    out = []
    for sid, frames in sorted(sequences.items()):
      image_dir = "rgb" if sid < hanco.FIRST_TEST_SEQUENCE else "rgb_merged"
      for fid in frames:
        for c in range(hanco.CAMERAS):
          rel = f"{sid:04d}/cam{c}/{fid:08d}"
          out.append((root / image_dir / f"{rel}.jpg", manual.label_path(root, rel)))
    return out
  patterns = {
    "freihand": ("training/rgb/*.jpg", "evaluation/rgb/*.jpg"),
    "dexycb": ("*-subject-*/*/*/color_*.jpg",),
    "ho3d": ("train/*/rgb/*.*", "evaluation/*/rgb/*.*"),
  }
  if dataset not in patterns:
    raise ValueError(f"unknown dataset '{dataset}'; known: {['hanco', *patterns]}")
  rels = [r for p in patterns[dataset] for r in _sorted_glob(root, p)]
  return [(root / r, manual.label_path(root, r)) for r in rels]


def ensure_venv(venv: pathlib.Path) -> pathlib.Path:
  """The MediaPipe environment's Python, created with pip if missing."""
  python = venv / "bin" / "python"
  if python.is_file():
    return python
  print(f"creating {venv} with {' '.join(MEDIAPIPE)} (once)", flush=True)
  # Built aside and renamed when complete: a failed pip run never leaves an environment that
  # looks ready (only its bin/python is used, which runs from anywhere).
  partial = venv.with_name(venv.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
  subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q", *MEDIAPIPE],
                 check=True)  # fmt: skip
  partial.rename(venv)
  return python


def run_jobs(jobs, *, venv=DEFAULT_VENV, create=True, workers: int = 0) -> dict:
  """MediaPipe over [(image, labels path)] in its environment; each label file is written
  atomically by the worker, so an interrupted run leaves no half-written file and a rerun
  resumes with the images still missing labels. `create=False`: a missing environment is a
  FileNotFoundError (nothing is installed). workers: parallel workers (0: one per core)."""
  workers = workers or os.cpu_count() or 1
  if not jobs:
    return {"images": 0, "missed": 0}
  venv = pathlib.Path(venv).expanduser()
  if not create and not (venv / "bin" / "python").is_file():
    raise FileNotFoundError(f"no MediaPipe environment at {venv} (python -m handflow.data.detect)")
  python = ensure_venv(venv)
  # One worker per core: each runs MediaPipe's graph on one thread.
  shards = [s for s in (jobs[i::workers] for i in range(workers)) if s]
  with tempfile.TemporaryDirectory() as tmp:
    procs = []
    for k, shard in enumerate(shards):
      path = pathlib.Path(tmp) / f"jobs{k}.jsonl"
      path.write_text(
        "".join(json.dumps({"image": str(i), "labels": str(o)}) + "\n" for i, o in shard)
      )
      procs.append(
        subprocess.Popen(
          [str(python), str(WORKER), str(path)],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
        )
      )
    outs = [(p, *p.communicate()) for p in procs]
  failed = [(p.returncode, err) for p, _, err in outs if p.returncode]
  if failed:
    code, err = failed[0]
    raise RuntimeError(f"MediaPipe worker failed ({code}): {err.strip()[-2000:]}")
  totals = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]
  return {k: sum(t[k] for t in totals) for k in totals[0]}


def run(dataset, root, *, venv=DEFAULT_VENV, overwrite=False, limit=0) -> dict:
  jobs = [(i, o) for i, o in images(dataset, root) if overwrite or not o.exists()]
  if limit:
    jobs = jobs[:limit]
  return run_jobs(jobs, venv=venv)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--setup", action="store_true", help="only create MediaPipe's environment")
  ap.add_argument("--dataset", choices=("hanco", "freihand", "dexycb", "ho3d"))
  ap.add_argument("--manual_dir", help="the dataset's root (official layout)")
  ap.add_argument("--venv", default=str(DEFAULT_VENV), help="MediaPipe's environment")
  ap.add_argument("--overwrite", action="store_true", help="redo images that have labels")
  ap.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
  args = ap.parse_args(argv)
  if args.setup:
    print(f"MediaPipe's environment: {ensure_venv(pathlib.Path(args.venv).expanduser())}")
    return 0
  if not (args.dataset and args.manual_dir):
    ap.error("--dataset and --manual_dir are required (or --setup)")
  try:
    out = run(
      args.dataset,
      pathlib.Path(args.manual_dir),
      venv=args.venv,
      overwrite=args.overwrite,
      limit=args.limit,
    )
  except (manual.ManualDataError, RuntimeError, subprocess.CalledProcessError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{out['images']} images labelled, {out['missed']} without a detected right hand")
  return 0


if __name__ == "__main__":
  sys.exit(main())
