"""handflow's entry point: flags -> config -> mode.

  python -m handflow.main --config=configs/ust.py --workdir=DIR [--mode=train]
      [--config.key=value ...]

Modes: train | eval | predict | prepare. Every mode runs the preflight (resolved config, hand
model check); train, eval and predict build the embedded dataset on first use (reused after).
train writes checkpoints, metrics.jsonl (and TensorBoard), then results.{md,json} and figures
(the test split, scored once; `handflow.modes`); eval re-reports the newest checkpoint; predict
writes predictions-*.npz. A config with `stages` (HandMIM: pre-training, fine-tuning, scratch)
runs each stage in its own sub-directory and compares them (`handflow.stages`).

Nothing is written before every check passed: the workdir is probed for writing, the config's
values are range-checked, and a workdir holding a trained run is compared with its recorded
config (`handflow.workdir`; eval and predict never rewrite the record). Exit codes: 0 done;
2 a bad input, in one line `handflow: error: ...`; 143 / 130 stopped by SIGTERM / SIGINT after
saving a checkpoint (no final report; the same command resumes).
"""

import sys

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from handflow import checkpoint, modes, preflight, sharding, stages, train
from handflow import workdir as workdir_lib
from handflow.data import prepare
from handflow.methods import registry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "prepare"], "What to run.")
# Multi-host: set by the launcher (launch/tpu.sh sets HANDFLOW_DISTRIBUTED=1 on TPU pods, where
# JAX finds the coordinator itself); on other clusters pass all three.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def _die(msg: str):
  print(f"handflow: error: {msg}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's parser, with config errors reduced to one line naming the key or file at fault."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # a config that failed to load raises on first use: do it here.
    return rest
  except Exception as e:  # noqa: BLE001 - any failure loading a config is a user error.
    cause = e
    while nxt := cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__):
      cause = nxt
    if isinstance(cause, AttributeError | KeyError):
      name = str(cause).strip("'\"")
      bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and name in a]
      _die(f"unknown config key {bad[0][len('--config.') :] if bad else name!r}")
    if isinstance(cause, FileNotFoundError) or "Failed loading config file" in str(cause):
      path = getattr(cause, "filename", None) or next(
        (a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), "?"
      )
      _die(f"config file not found or not loadable: {path}")
    msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    if isinstance(cause, ValueError) and overrides and not msg.startswith("config arg"):
      msg = f"bad value in config override(s) {overrides}: {msg}"
    _die(msg)


def _quiet_console():
  """The progress line, one line per evaluation and the tables: library INFO logs, TFDS
  progress bars and deprecation warnings only with --verbosity=0 (absl's flag) or higher."""
  if flags.FLAGS["verbosity"].present:
    return
  import warnings

  import tensorflow_datasets as tfds
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # TFDS warns about its own deprecations
  tfds.disable_progress_bar()
  for category in (DeprecationWarning, FutureWarning, UserWarning):
    warnings.filterwarnings("ignore", category=category)


def main(argv):
  if len(argv) > 1:
    _die(f"unexpected arguments: {argv[1:]}")
  _quiet_console()
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  return execute(_CONFIG.value, epath.Path(_WORKDIR.value), _MODE.value)


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
    _die(str(e))
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
    _die(f"mode 'prepare' is not available yet for dataset '{config.data.name}'")
  if method not in registry.METHODS and mode != "prepare":
    _die(f"unknown method '{method}'; known: {sorted(registry.METHODS)}")
  for sub in [workdir / n for n in config.stages.compare] if staged else [workdir]:
    ckpts = sub / "checkpoints"
    if mode in ("eval", "predict") and not (
      ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())
    ):
      _die(f"mode '{mode}' needs a trained checkpoint, and {ckpts} has none: train first")
  if config.data.name in prepare.BUILDABLE or mode == "prepare":
    # The embedded dataset is generated on first use and reused after.
    try:
      info = prepare.prepare(config)
    except ValueError as e:
      _die(str(e))
    print(f"handflow: {config.data.name} ready in {info['data_dir']}: {info['splits']}")
  if mode == "prepare":
    return 0
  try:
    (stages.run if staged else modes.run)(mode, config, workdir)
  except (ValueError, checkpoint.CheckpointError, train.NonFiniteError) as e:
    _die(str(e))
  except train.Preempted as e:
    print(f"handflow: stopped by {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  done = {"train": f"trained {method} for {config.num_steps} steps", "eval": "evaluated"}
  print(f"handflow: {done.get(mode, mode)}; outputs in {workdir}")
  return 0


def _main_interruptible(argv):
  try:
    return main(argv)
  except KeyboardInterrupt:
    # Outside the training steps (data, compilation, report) or on a second Ctrl-C: nothing is
    # half-written (outputs are atomic; checkpoints are orbax's temporary directories until
    # complete), and the last checkpoint stands.
    print(
      "\nhandflow: interrupted (Ctrl-C); run the same command again to resume from the last "
      "checkpoint",
      file=sys.stderr,
    )
    sys.exit(130)


def run():
  app.run(_main_interruptible, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
