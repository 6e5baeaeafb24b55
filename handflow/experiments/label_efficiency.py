"""HandMIM's claim as an experiment: does masked-image-modeling pre-training make mesh
fine-tuning more label-efficient, and which of its objectives carries that?

  python -m handflow.experiments.label_efficiency --workdir=DIR [--seeds=0,1]
      [--fractions=0.01,0.1,1] [--arms=scratch,handmim,no_keypoints,no_patch,no_pixels]
      [--config=configs/handmim.py] [--config.num_steps=N ...]

Arms: scratch (fine-tuning from a random ViT), handmim (pre-training with every objective),
and pre-training without one objective (no_keypoints: no pseudo-keypoint alignment, no_patch:
no iBOT patch distillation, no_pixels: no pixel reconstruction). Every arm fine-tunes the same
model with the same budget (the config's fine-tuning steps, batch and learning rate) on the same
labelled subset (`data.labelled_fraction` = each of `--fractions`, a fixed hash of the image
ids); pre-training reads every training image without labels, with its own budget (the
config's `stages.pretrain`). Seeds are paired (seed s: the same initialisation and data order in
every arm); one pre-training per (arm, seed) serves every fraction. Each cell trains with no
evaluation on the way and scores the test split once (`cells.run_one`; finished cells are
reused, so the command resumes). Writes DIR/label_efficiency.{md,json,png}: the FreiHAND
protocol's PA-MPJPE, PA-MPVPE, F@5, F@15 (mean [95% bootstrap CI] over seeds) per arm and
fraction, each arm's paired difference from scratch, and per fraction the constant a regressor
that learned nothing image-specific converges to: the Procrustes mean of the labelled training
images' keypoints (`eval.baselines`; PA metrics only; the subset does not depend on the seed).
"""

from __future__ import annotations

import json

import jax
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import files, stages
from handflow.data import prepare
from handflow.experiments import cells

_FLAGS = {}
ARMS = {  # pre-training loss terms each arm switches off; None: no pre-training
  "scratch": None,
  "handmim": (),
  "no_keypoints": ("keypoints",),
  "no_patch": ("patch",),
  "no_pixels": ("pixels",),
}
METRICS = ("PA-MPJPE", "PA-MPVPE", "F@5", "F@15")


def _define_flags():
  """Defined only when run (the experiments share flag names; tests import them all)."""
  _FLAGS["config"] = config_flags.DEFINE_config_file(
    "config", "configs/handmim.py", "HandMIM config (with stages)."
  )
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "Directory for the runs and tables.")
  _FLAGS["seeds"] = flags.DEFINE_list("seeds", ["0", "1"], "Paired seeds.")
  _FLAGS["fractions"] = flags.DEFINE_list("fractions", ["0.01", "0.1", "1"], "Label shares.")
  _FLAGS["arms"] = flags.DEFINE_list("arms", list(ARMS), "Which arms.")
  flags.mark_flags_as_required(["workdir"])


def pretrain_config(base, arm: str, seed: int):
  c = stages.apply(base, base.stages.pretrain)
  for term in ARMS[arm]:
    c.loss[term] = 0.0
  c.seed, c.eval_every = seed, 0
  return c


def finetune_config(base, fraction: float, seed: int, init_from: str):
  c = stages.apply(base, base.stages.finetune)
  c.init_from.workdir = init_from
  c.data.labelled_fraction = fraction
  c.seed, c.eval_every = seed, 0
  return c


def run(base, workdir: epath.Path, arms, fractions, seeds) -> dict:
  """results[arm][fraction][seed] = the test metrics of that cell."""
  results = {}
  for seed in seeds:  # seed-major: paired comparisons fill in first
    for arm in arms:
      init = ""
      if ARMS[arm] is not None:
        pt = workdir / f"pretrain_{arm}_s{seed}"
        print(f"label_efficiency: pre-training {arm}, seed {seed}", flush=True)
        cells.run_one(pretrain_config(base, arm, seed), pt)
        init = str(pt)
      for frac in fractions:
        print(f"label_efficiency: {arm}, {frac:g} of the labels, seed {seed}", flush=True)
        cell = workdir / f"{arm}_f{frac:g}_s{seed}"
        out = cells.run_one(finetune_config(base, frac, seed, init), cell)
        results.setdefault(arm, {}).setdefault(f"{frac:g}", {})[seed] = out
  return results


def constants(base, fractions) -> dict:
  """{fraction: {"freihand/PA-MPJPE": mm, ...}}: the labelled training images' mean hand scored
  on the test split (`cells.constant`; the subset does not depend on the seed)."""
  out = {}
  for frac in fractions:
    row = cells.constant(finetune_config(base, frac, 0, ""))
    if row:
      out[f"{frac:g}"] = row
  return out


def table(results: dict, budget: str, mean_hand: dict | None = None) -> str:
  lines = [f"Budget: {budget}.", ""]
  fracs = list(next(iter(results.values())))
  for metric in METRICS:
    key = f"freihand/{metric}"
    mm = metric.startswith("PA")
    lines += [f"Test {metric}" + (" (mm)" if mm else "") + " by share of labelled images:", ""]
    lines += ["| arm | seeds | " + " | ".join(fracs) + " |", "|---" * (len(fracs) + 2) + "|"]
    for arm, per in results.items():
      n = max(len(v) for v in per.values())
      row = [cells.fmt(cells.bootstrap_ci([r[key] for r in per[f].values()]), 1 if mm else 3)
             for f in fracs]  # fmt: skip
      lines.append(f"| {arm} | {n} | " + " | ".join(row) + " |")
    if mean_hand and all(key in mean_hand.get(f, {}) for f in fracs):
      row = [f"{mean_hand[f][key]:.1f}" for f in fracs]
      lines.append(f"| {cells.CONSTANT} | – | " + " | ".join(row) + " |")
    if "scratch" in results:
      lines += ["", f"{metric} minus scratch, paired by seed:", ""]
      lines += ["| arm | " + " | ".join(fracs) + " |", "|---" * (len(fracs) + 1) + "|"]
      base = results["scratch"]
      for arm, per in results.items():
        if arm == "scratch":
          continue
        row = []
        for f in fracs:
          common = sorted(set(per[f]) & set(base[f]))
          diffs = [per[f][s][key] - base[f][s][key] for s in common]
          row.append(cells.fmt(cells.bootstrap_ci(diffs), 1 if mm else 3))
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines.append("")
  return "\n".join(lines)


def plot_png(results: dict) -> bytes:
  from handflow.viz import figures

  fracs = list(next(iter(results.values())))
  series = {
    arm: [cells.bootstrap_ci([r["freihand/PA-MPVPE"] for r in per[f].values()]) for f in fracs]
    for arm, per in results.items()
  }
  return figures.ci_lines_png(
    [f"{float(f):.0%}" for f in fracs], series, "labelled images", "test PA-MPVPE (mm)",
    "HandMIM: label efficiency (mean, 95% CI over seeds)",
  )  # fmt: skip


def main(argv):
  del argv
  base = _FLAGS["config"].value
  if not base.get("stages"):
    raise app.UsageError("the config must hold the pre-training and fine-tuning stages")
  workdir = epath.Path(_FLAGS["workdir"].value)
  arms = _FLAGS["arms"].value
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    raise app.UsageError(f"unknown arms {unknown}; known: {list(ARMS)}")
  fractions = [float(f) for f in _FLAGS["fractions"].value]
  seeds = [int(s) for s in _FLAGS["seeds"].value]
  prepare.prepare(base)
  pt = stages.apply(base, base.stages.pretrain)
  budget = (
    f"pre-training {pt.num_steps} steps x batch {pt.batch_size} images; fine-tuning "
    f"{base.num_steps} steps x batch {base.batch_size}, lr {base.optim.learning_rate}, "
    f"{base.model.vit} ViT on {base.data.crop_size} px crops"
  )
  results = run(base, workdir, arms, fractions, seeds)
  mean_hand = constants(base, fractions)
  text = table(results, budget, mean_hand)
  if jax.process_index() == 0:
    files.write_text_atomic(workdir / "label_efficiency.md", text)
    record = {"arms": results, "mean_hand": mean_hand}
    files.write_text_atomic(workdir / "label_efficiency.json", json.dumps(record, indent=1))
    png = plot_png(results)
    files.write_atomic(workdir / "label_efficiency.png", lambda f: f.write(png))
  print(text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
