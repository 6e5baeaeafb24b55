"""CycleHand's claim as an experiment: with labels only in a frontal cone, do the cycle, the
contrastive term and the mechanical constraints improve the views the labels never cover?

  python -m handflow.experiments.cycle_views --workdir=DIR [--seeds=0,1,2]
      [--arms=supervised,cycle,cycle_contrastive,full] [--cone=60]
      [--config=configs/cyclehand.py] [--config.num_steps=N ...]

Every arm reads the same labels: `data.labelled_fraction` of the images, only those whose
camera-palm angle is within `--cone` degrees (`data.labelled_views`); the others are unlabelled.
Arms (loss weights set to 0 switch a part off; everything else is the config's):
- supervised: the labelled terms only (no photometric, cycle, contrastive or mechanical term);
- cycle: + photometric (input vs (a), silhouette) and the cycle (c-b, d-a, input vs (d));
- cycle_contrastive: + NT-Xent between real images and their re-renderings;
- full: + joint limits and finger penetration.
Seeds are paired (seed s: the same data order and initialisation in every arm). Each cell is the
config's full training with no evaluation on the way, then one pass over the test split
(`cells.run_one`; a finished cell is reused). Writes DIR/cycle_views.md: per arm and viewpoint
bin the test PA-MPJPE (mean [95% bootstrap CI] over seeds), its paired difference from
`supervised`, and the constant every arm must beat (the labelled images' mean hand,
`cells.constant`, per bin), and DIR/cycle_views.json.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import files
from handflow.data import prepare
from handflow.experiments import cells
from handflow.geometry import viewpoint

_FLAGS = {}


def _define_flags():
  """Defined only when run (the experiments share flag names; tests import them all)."""
  _FLAGS["config"] = config_flags.DEFINE_config_file(
    "config", "configs/cyclehand.py", "Experiment config."
  )
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "Directory for the runs and tables.")
  _FLAGS["seeds"] = flags.DEFINE_list("seeds", ["0", "1", "2"], "Paired seeds.")
  _FLAGS["arms"] = flags.DEFINE_list("arms", list(ARMS), "Which arms.")
  _FLAGS["cone"] = flags.DEFINE_float("cone", 60.0, "Labels only within this angle (degrees).")
  flags.mark_flags_as_required(["workdir"])


SELF = ("photo", "silhouette", "cycle", "cycle_photo")
ARMS = {
  "supervised": (*SELF, "contrastive", "limits", "penetration"),
  "cycle": ("contrastive", "limits", "penetration"),
  "cycle_contrastive": ("limits", "penetration"),
  "full": (),
}  # the loss terms each arm switches off
METRIC = "PA-MPJPE"


def arm_config(base, arm: str, seed: int, cone: float):
  config = base.copy_and_resolve_references()
  for term in ARMS[arm]:
    config.loss[term] = 0.0
  config.seed, config.eval_every = seed, 0
  config.data.labelled_views = cone
  return config


def table(results: dict, budget: str, mean_hand: dict | None = None) -> str:
  """results[arm][seed] -> markdown: PA-MPJPE per viewpoint bin (and overall), mean [CI] over
  seeds, the constant `mean_hand` ({metric key: mm}) when given, and each arm minus
  `supervised` paired by seed (< 0: better than supervised)."""
  bins = [*viewpoint.bin_names(), "all"]
  key = lambda b: f"freihand/{METRIC}" if b == "all" else f"view/{b}/{METRIC}"
  lines = [f"Budget per cell: {budget}.", "", f"Test {METRIC} (mm) by camera-palm angle (deg):"]
  lines += ["", "| arm | seeds | " + " | ".join(bins) + " |", "|---" * (len(bins) + 2) + "|"]
  for arm, per_seed in results.items():
    cells_ = [cells.fmt(cells.bootstrap_ci(_finite(r.get(key(b)) for r in per_seed.values())))
              for b in bins]  # fmt: skip
    lines.append(f"| {arm} | {len(per_seed)} | " + " | ".join(cells_) + " |")
  if mean_hand:
    row = [f"{mean_hand[key(b)]:.1f}" if key(b) in mean_hand else "–" for b in bins]
    lines.append(f"| {cells.CONSTANT} | – | " + " | ".join(row) + " |")
  if "supervised" in results:
    base = results["supervised"]
    lines += ["", "Minus `supervised`, paired by seed (mm; < 0: better):", ""]
    lines += ["| arm | " + " | ".join(bins) + " |", "|---" * (len(bins) + 1) + "|"]
    for arm, per_seed in results.items():
      if arm == "supervised":
        continue
      common = sorted(set(per_seed) & set(base))
      diffs = [
        cells.fmt(cells.bootstrap_ci(_finite(per_seed[s].get(key(b), np.nan)
                                             - base[s].get(key(b), np.nan) for s in common)))
        for b in bins
      ]  # fmt: skip
      lines.append(f"| {arm} | " + " | ".join(diffs) + " |")
  return "\n".join(lines) + "\n"


def _finite(values) -> list[float]:
  return [float(v) for v in values if v is not None and np.isfinite(v)]


def main(argv):
  del argv
  base = _FLAGS["config"].value
  workdir = epath.Path(_FLAGS["workdir"].value)
  arms, cone = _FLAGS["arms"].value, _FLAGS["cone"].value
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    raise app.UsageError(f"unknown arms {unknown}; known: {list(ARMS)}")
  prepare.prepare(base)
  budget = (
    f"{base.num_steps} steps x batch {base.batch_size} images, lr {base.optim.learning_rate}, "
    f"labels: {base.data.labelled_fraction:.0%} of the images within {cone:g} deg"
  )
  results = {}
  for seed in (int(s) for s in _FLAGS["seeds"].value):  # seed-major: pairs fill in first
    for arm in arms:
      print(f"cycle_views: {arm}, seed {seed}", flush=True)
      config = arm_config(base, arm, seed, cone)
      results.setdefault(arm, {})[seed] = cells.run_one(config, workdir / f"{arm}_s{seed}")
  mean_hand = cells.constant(arm_config(base, "supervised", 0, cone), bins=True)
  text = table(results, budget, mean_hand)
  if jax.process_index() == 0:
    files.write_text_atomic(workdir / "cycle_views.md", text)
    record = {"arms": results, "mean_hand": mean_hand}
    files.write_text_atomic(workdir / "cycle_views.json", json.dumps(record, indent=1))
  print(text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
