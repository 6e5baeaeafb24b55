"""The paper's claim as an experiment: the flow head degrades less with noisier pseudo-labels.

  python -m handflow.experiments.noise_sweep --workdir=DIR [--config=configs/ust.py]
      [--levels=clean,default,noisy] [--config.num_steps=N ...]

Trains UST-Hand with the flow head and with the deterministic 2D head (`model.flow = False`:
a Laplace density around mu, one point per joint) at three pseudo-label levels (`LEVELS`: the
simulated detector's jitter and outlier rates; the other error rates scale with them), each run
in DIR/<head>_<level> (a finished run is reused), and writes DIR/noise_sweep.{md,json}: test
MPJPE and MPVPE (HanCo and root-relative protocols, mm) and the teacher's MPJPE per level.
Each run is the config's full training (the CPU default: about 8 minutes).
"""

from __future__ import annotations

import json

import jax
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import files, modes, sharding, train
from handflow.data import prepare
from handflow.eval import evaluators
from handflow.methods import registry

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ust.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and the table.")
_LEVELS = flags.DEFINE_list("levels", ["clean", "default", "noisy"], "Pseudo-label levels.")

# (jitter as a fraction of the hand's size, outlier rate, swap rate, flip rate)
LEVELS = {
  "clean": dict(noise=0.01, outlier_rate=0.0, swap_rate=0.0, flip_rate=0.0),
  "default": dict(noise=0.02, outlier_rate=0.03, swap_rate=0.02, flip_rate=0.01),
  "noisy": dict(noise=0.04, outlier_rate=0.12, swap_rate=0.06, flip_rate=0.03),
}
HEADS = {"flow": True, "deterministic": False}
KEYS = ("hanco/MPJPE", "hanco/MPVPE", "rootrel/MPJPE", "rootrel/MPVPE")


def run_one(config, workdir: epath.Path) -> dict:
  """Trains one cell (no evaluation during training: nothing is chosen on the way) and scores
  its test split once; a finished cell's results are reused."""
  done = workdir / "final.json"
  if done.exists():
    return json.loads(done.read_text())
  method = registry.make(config)
  state = train.train_and_evaluate(config, workdir, method, modes.train_batches(config))
  mesh = sharding.make_mesh(dict(config.mesh))
  stats_fn = evaluators.make_stats_fn(method, evaluators.from_config(config), mesh)
  test = modes.split_batches(config, "test")()
  results = evaluators.evaluate(stats_fn, state.eval_params, state.extra, test, mesh)
  if jax.process_index() == 0:
    files.write_text_atomic(done, json.dumps(results, sort_keys=True))
  return results


def table(results: dict) -> str:
  levels = list(next(iter(results.values())))
  lines = [
    "| head | level | " + " | ".join(KEYS) + " | teacher hanco/MPJPE |",
    "|---|---|" + "---|" * (len(KEYS) + 1),
  ]
  for head, per_level in results.items():
    for level in levels:
      r = per_level[level]
      cells = [f"{r[k]:.1f}" for k in KEYS] + [f"{r['teacher/hanco/MPJPE']:.1f}"]
      lines.append(f"| {head} | {level} | " + " | ".join(cells) + " |")
  lines += ["", "Degradation from the cleanest to the noisiest level (HanCo MPJPE, mm):", ""]
  for head, per_level in results.items():
    first, last = per_level[levels[0]], per_level[levels[-1]]
    lines.append(f"- {head}: {last['hanco/MPJPE'] - first['hanco/MPJPE']:+.1f}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  base = _CONFIG.value
  workdir = epath.Path(_WORKDIR.value)
  unknown = [lv for lv in _LEVELS.value if lv not in LEVELS]
  if unknown:
    raise app.UsageError(f"unknown levels {unknown}; known: {sorted(LEVELS)}")
  prepare.prepare(base)
  results = {}
  for head, use_flow in HEADS.items():
    results[head] = {}
    for level in _LEVELS.value:
      config = base.copy_and_resolve_references()
      config.model.flow = use_flow
      config.eval_every = 0
      config.data.pseudo_labels.update(LEVELS[level])
      print(f"noise_sweep: {head} head, {level} pseudo-labels ({LEVELS[level]})")
      results[head][level] = run_one(config, workdir / f"{head}_{level}")
  text = table(results)
  if jax.process_index() == 0:
    files.write_text_atomic(workdir / "noise_sweep.md", text)
    files.write_text_atomic(
      workdir / "noise_sweep.json", json.dumps({"levels": LEVELS, "results": results}, indent=1)
    )
  print(text)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
