"""What `python -m handflow.main` does once its flags are parsed (`execute`), apart from the
flags so that it can run in process (tests; absl's flags are process-global): the checks, then
the mode, with every user error as one line `handflow: error: ...` and exit 2.
"""

import sys

from etils import epath

from handflow import checkpoint, interrupts, modes, preflight, stages, train
from handflow import workdir as workdir_lib
from handflow.data import prepare
from handflow.methods import registry


def die(msg: str):
  print(f"handflow: error: {msg}", file=sys.stderr)
  sys.exit(2)


def execute(config, workdir: epath.Path, mode: str) -> int:
  """Everything after the flags (workdir local or gs://): checks, then the mode; a user error
  is one line on stderr and exit 2 (SystemExit)."""
  method = config.get("method", "?")
  staged = bool(config.get("stages"))
  try:
    summary = preflight.run(config, workdir, mode)
    if staged:
      stages.check(config, workdir)
  except (FileNotFoundError, ValueError, FloatingPointError) as e:
    die(str(e))
  record = f"; wrote {workdir / 'config.json'} and {workdir / 'hand_model.json'}"
  wrote = record if mode == "train" else ""
  print(
    f"handflow: config and hand model OK ({summary['name']}, {summary['vertices']} vertices)"
    + wrote
  )
  if summary["changed"]:
    step = workdir_lib.trained_step(workdir)
    keys = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in summary["changed"].items())
    print(f"handflow: continuing the run of step {step} with changed keys (allowed): {keys}; "
          f"the earlier record is config-{step}.json")  # fmt: skip
  if mode == "prepare" and config.data.name not in prepare.BUILDABLE + prepare.MANUAL:
    die(f"mode 'prepare' is not available yet for dataset '{config.data.name}'")
  if method not in registry.METHODS and mode != "prepare":
    die(f"unknown method '{method}'; known: {sorted(registry.METHODS)}")
  for sub in [workdir / n for n in config.stages.compare] if staged else [workdir]:
    ckpts = sub / "checkpoints"
    if mode in ("eval", "predict") and not (
      ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())
    ):
      die(f"mode '{mode}' needs a trained checkpoint, and {ckpts} has none: train first")
  if config.data.name in prepare.BUILDABLE or mode == "prepare":
    # The embedded dataset is generated on first use and reused after.
    try:
      info = prepare.prepare(config)
    except ValueError as e:
      die(str(e))
    print(f"handflow: {config.data.name} ready in {info['data_dir']}: {info['splits']}")
  if mode == "prepare":
    return 0
  try:
    (stages.run if staged else modes.run)(mode, config, workdir)
  except (ValueError, checkpoint.CheckpointError, train.NonFiniteError) as e:
    die(str(e))
  except interrupts.Preempted as e:
    print(f"handflow: stopped by {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  done = {"train": f"trained {method} for {config.num_steps} steps", "eval": "evaluated"}
  print(f"handflow: {done.get(mode, mode)}; outputs in {workdir}")
  return 0
