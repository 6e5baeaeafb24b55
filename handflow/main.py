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

from handflow import entry, sharding

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "prepare"], "What to run.")
# Multi-host: set by the launcher (launch/tpu.sh sets HANDFLOW_DISTRIBUTED=1 on TPU pods, where
# JAX finds the coordinator itself); on other clusters pass all three.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


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
      entry.die(f"unknown config key {bad[0][len('--config.') :] if bad else name!r}")
    if isinstance(cause, FileNotFoundError) or "Failed loading config file" in str(cause):
      path = getattr(cause, "filename", None) or next(
        (a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), "?"
      )
      entry.die(f"config file not found or not loadable: {path}")
    msg = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    if isinstance(cause, ValueError) and overrides and not msg.startswith("config arg"):
      msg = f"bad value in config override(s) {overrides}: {msg}"
    entry.die(msg)


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
    entry.die(f"unexpected arguments: {argv[1:]}")
  _quiet_console()
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  return entry.execute(_CONFIG.value, epath.Path(_WORKDIR.value), _MODE.value)


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
