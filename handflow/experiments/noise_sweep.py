"""UST-Hand's claims as experiments, resumable, over paired seeds.

  python -m handflow.experiments.noise_sweep --workdir=DIR [--study=heads|views]
      [--seeds=0,1,2] [--levels=clean,default,hard,mediapipe,real] [--heads=flow,laplace,l1]
      [--config=configs/ust.py] [--config.num_steps=N ...]

- `heads` (the paper's claim: the flow degrades less as pseudo-labels get worse): the 2D head
  (`model.head`: the flow; a deterministic Laplace head with a learned scale; plain L1) x the
  simulated detector's presets (`pseudo_labels.PRESETS`) and `real` (MediaPipe's labels of the
  same renders, `data.pseudo_labels.source = "mediapipe"`; skipped, said in one line, without
  its environment) x seeds. Seeds are paired: seed s of every cell sees the same data order,
  labels and initialisation, so differences are taken per seed.
- `views`: the flow head at the default level with 2 / 4 / 8 views x 1 / 4 frames x seeds.

Every cell is the config's full training (the same steps, batch and schedule for every cell:
the budget is the config's, printed in the table's header), with no evaluation on the way
(nothing is chosen), then one pass over the test split. A finished cell (DIR/<cell>/final.json)
is reused, so an interrupted sweep resumes. Writes DIR/<study>.md (tables: mean and 95%
bootstrap CI over seeds of test MPJPE / MPVPE (HanCo protocol, mm) and the teacher's; per head
the degradation from `clean` paired by seed, and the flow's degradation minus each other head's
with its paired bootstrap CI), DIR/<study>.json and DIR/<study>.png.
"""

from __future__ import annotations

import json

import jax
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import files
from handflow.data import prepare, pseudo_labels
from handflow.experiments import cells

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ust.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and the tables.")
_STUDY = flags.DEFINE_enum("study", "heads", ["heads", "views"], "Which claim.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Paired seeds.")
_LEVELS = flags.DEFINE_list(
  "levels", ["clean", "default", "hard", "mediapipe", "real"], "Pseudo-label levels."
)
_HEADS = flags.DEFINE_list("heads", ["flow", "laplace", "l1"], "2D heads.")

LEVELS = (*pseudo_labels.PRESETS, "real")
KEYS = ("hanco/MPJPE", "hanco/MPVPE", "teacher_frames/hanco/MPJPE", "teacher/hanco/MPJPE")
VIEWS, FRAMES = (2, 4, 8), (1, 4)


run_one, bootstrap_ci, _fmt = cells.run_one, cells.bootstrap_ci, cells.fmt


def _get(result: dict, key: str) -> float:
  return result.get(key, float("nan"))  # a key added after the cell ran


def heads_table(results: dict, budget: str) -> str:
  """results[head][level][seed] -> markdown: per cell mean [CI] over seeds; degradation from
  the first level paired by seed; flow minus each other head, paired by seed."""
  heads = list(results)
  levels = list(next(iter(results.values())))
  seeds = lambda h, lv: sorted(results[h][lv])
  lines = [f"Budget per cell: {budget}.", ""]
  lines += ["| head | level | seeds | " + " | ".join(KEYS) + " |", "|---" * (3 + len(KEYS)) + "|"]
  for h in heads:
    for lv in levels:
      cells = [_fmt(bootstrap_ci([_get(results[h][lv][s], k) for s in seeds(h, lv)])) for k in KEYS]
      lines.append(f"| {h} | {lv} | {len(seeds(h, lv))} | " + " | ".join(cells) + " |")
  base = levels[0]

  def degradation(h, lv):
    common = sorted(set(results[h][lv]) & set(results[h][base]))
    key = "hanco/MPJPE"
    return {s: results[h][lv][s][key] - results[h][base][s][key] for s in common}

  lines += ["", f"Degradation from `{base}` (HanCo MPJPE, mm; mean [95% CI] over paired seeds):"]
  lines += ["", "| head | " + " | ".join(levels[1:]) + " |", "|---" * len(levels) + "|"]
  for h in heads:
    cells = [_fmt(bootstrap_ci(list(degradation(h, lv).values()))) for lv in levels[1:]]
    lines.append(f"| {h} | " + " | ".join(cells) + " |")
  if "flow" in heads:
    lines += ["", "Flow's degradation minus the other head's (< 0: the flow degrades less):"]
    lines += ["", "| vs | " + " | ".join(levels[1:]) + " |", "|---" * len(levels) + "|"]
    for h in heads:
      if h == "flow":
        continue
      cells = []
      for lv in levels[1:]:
        a, b = degradation("flow", lv), degradation(h, lv)
        cells.append(_fmt(bootstrap_ci([a[s] - b[s] for s in sorted(set(a) & set(b))])))
      lines.append(f"| {h} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def views_table(results: dict, budget: str) -> str:
  """results["v{views}_t{frames}"][seed] -> markdown."""
  lines = [f"Budget per cell: {budget}.", ""]
  lines += ["| views | frames | seeds | " + " | ".join(KEYS) + " |", "|---" * (3 + len(KEYS)) + "|"]
  for cell, per_seed in results.items():
    v, t = cell[1:].split("_t")
    cells = [_fmt(bootstrap_ci([_get(r, k) for r in per_seed.values()])) for k in KEYS]
    lines.append(f"| {v} | {t} | {len(per_seed)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_png(results: dict) -> bytes:
  """Heads study: test MPJPE per level, one line per head, error bars = bootstrap CI."""
  from handflow.viz import figures

  levels = list(next(iter(results.values())))
  series = {
    h: [bootstrap_ci([r["hanco/MPJPE"] for r in per_level[lv].values()]) for lv in levels]
    for h, per_level in results.items()
  }
  return figures.ci_lines_png(levels, series, "pseudo-labels", "test MPJPE (HanCo protocol, mm)")


def _real_available(config) -> bool:
  from handflow.data import detected_labels

  cfg = config.copy_and_resolve_references()
  cfg.data.pseudo_labels.source = "mediapipe"
  builder = prepare.dataset_builder(cfg)
  return all(detected_labels.load(builder, s) is not None for s in ("train", "test"))


def main(argv):
  del argv
  base = _CONFIG.value
  workdir = epath.Path(_WORKDIR.value)
  seeds = [int(s) for s in _SEEDS.value]
  unknown = [lv for lv in _LEVELS.value if lv not in LEVELS]
  if unknown:
    raise app.UsageError(f"unknown levels {unknown}; known: {list(LEVELS)}")
  prepare.prepare(base)
  budget = f"{base.num_steps} steps x batch {base.batch_size} clips, lr {base.optim.learning_rate}"
  study = _STUDY.value
  results = {}
  if study == "heads":
    levels = list(_LEVELS.value)
    if "real" in levels and not _real_available(base):
      print("noise_sweep: no MediaPipe environment: the 'real' level is skipped")
      levels.remove("real")
    for head in _HEADS.value:
      results[head] = {}
      for level in levels:
        results[head][level] = {}
        for seed in seeds:
          config = base.copy_and_resolve_references()
          config.model.head, config.seed, config.eval_every = head, seed, 0
          if level == "real":
            config.data.pseudo_labels.source = "mediapipe"
          else:
            config.data.pseudo_labels.preset = level
          print(f"noise_sweep: {head} head, {level} labels, seed {seed}", flush=True)
          cell = workdir / f"{head}_{level}_s{seed}"
          results[head][level][seed] = run_one(config, cell)
    text = heads_table(results, budget)
  else:
    for v in VIEWS:
      for t in FRAMES:
        cell = f"v{v}_t{t}"
        results[cell] = {}
        for seed in seeds:
          config = base.copy_and_resolve_references()
          config.data.views, config.data.frames = v, t
          config.seed, config.eval_every = seed, 0
          print(f"noise_sweep: {v} views, {t} frames, seed {seed}", flush=True)
          results[cell][seed] = run_one(config, workdir / f"{cell}_s{seed}")
    text = views_table(results, budget)
  if jax.process_index() == 0:
    files.write_text_atomic(workdir / f"{study}.md", text)
    files.write_text_atomic(workdir / f"{study}.json", json.dumps(results, indent=1))
    if study == "heads":
      png = plot_png(results)
      files.write_atomic(workdir / f"{study}.png", lambda fh: fh.write(png))
  print(text)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
