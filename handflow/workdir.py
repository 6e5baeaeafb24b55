"""A run's workdir, checked before anything is written to it.

- `check_writable(workdir)`: the workdir (or the directory it would be made in) is a writable
  directory; probed with a temporary file, so a read-only mount or a path under a file fails
  here, in one line, not in `os.makedirs` deep in a run.
- `check_record(config, workdir, mode)`: a workdir that holds checkpoints is tied to the config
  recorded in its `config.json` by the training run that made them. A new command is compared
  with that record before anything is touched; keys that would change the model, the data or
  the training (say `model.num_hypotheses`) are refused with every differing key listed.
  Keys that change only how the run is driven (logging, checkpoint cadence, data paths, mesh)
  may differ. A change the user means (more steps, another learning rate from here on) is
  named in `--config.allow_changes=num_steps,optim` (keys or key prefixes; "*" for any); the
  record then moves to `config-<step>.json` and `config.json` describes the run from that step.
  eval and predict read the record and never rewrite it; they compare only what inference
  reads (method, model, hand, data).
"""

from __future__ import annotations

import json

from etils import epath

from handflow import files

# May differ between the commands of one run: how it is driven, not what it computes.
DRIVING = (
  "allow_changes", "log_every", "eval_every", "checkpoint", "tensorboard", "profile",
  "max_nonfinite", "resume", "init_from", "mesh", "param_sharding", "data.data_dir",
  "data.manual_dir", "data.mano_dir", "predict",
)  # fmt: skip
# What eval and predict read from the config (besides the driving keys, ignored).
INFERENCE = ("method", "model", "hand", "data", "stages", "variant")
INFERENCE_FREE = ("data.train_split", "data.eval_split", "data.test_split", "data.clips.train")


class WorkdirError(ValueError):
  """The workdir cannot take this command."""


def _under(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_writable(workdir) -> None:
  """Raises WorkdirError unless `workdir` is, or can be made as, a writable directory."""
  path = epath.Path(workdir)
  if "://" in str(path):  # object stores: their own permissions, checked by the first write.
    return
  path = path.expanduser().absolute()
  probe = path
  while not probe.exists():
    if probe.parent == probe:
      break
    probe = probe.parent
  if probe.exists() and not probe.is_dir():
    where = "is a file" if probe == path else f"is under {probe}, which is a file"
    raise WorkdirError(f"--workdir={workdir} {where}, not a directory")
  reason = files.unwritable(probe)
  if reason:
    raise WorkdirError(f"--workdir={workdir}: {reason}")


def normalised(config) -> dict:
  """The config as its JSON record reads back (tuples as lists, everything JSON)."""
  return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def differences(old: dict, new: dict, mode: str = "train") -> dict:
  """{key: (old, new)} of the keys that matter to `mode` (absent: "<absent>")."""
  a, b = flatten(old), flatten(new)
  out = {}
  for k in sorted(set(a) | set(b)):
    if _under(k, DRIVING):
      continue
    if mode != "train" and (not _under(k, INFERENCE) or _under(k, INFERENCE_FREE)):
      continue
    va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
    if va != vb:
      out[k] = (va, vb)
  return out


def trained_step(workdir) -> int | None:
  """The newest checkpoint step of the workdir's run (or of its stages), None when none."""
  workdir = epath.Path(workdir)
  dirs = [workdir / "checkpoints"]
  if workdir.is_dir():
    dirs += [d / "checkpoints" for d in workdir.iterdir() if d.is_dir()]
  steps = [int(p.name) for d in dirs if d.is_dir() for p in d.iterdir() if p.name.isdigit()]
  return max(steps) if steps else None


def _allowed(config) -> tuple:
  raw = str(config.get("allow_changes", "") or "")
  return tuple(s.strip() for s in raw.split(",") if s.strip())


def check_record(config, workdir, mode: str) -> dict:
  """Compares `config` with the workdir's record; returns the allowed changes {key: (old,
  new)} (empty: none, or nothing recorded yet). Raises WorkdirError on a refused change."""
  if mode == "prepare":  # builds data only: the workdir is not read
    return {}
  workdir = epath.Path(workdir)
  record = workdir / "config.json"
  step = trained_step(workdir) if workdir.exists() else None
  if step is None or not record.exists():
    return {}  # nothing trained here yet: the new config stands
  try:
    old = json.loads(record.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{record} cannot be read ({e}): the workdir's record is damaged") from None
  changes = differences(old, normalised(config), mode)
  allowed = _allowed(config) if mode == "train" else ()
  refused = {k: v for k, v in changes.items() if not ("*" in allowed or _under(k, allowed))}
  if refused:
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:8])
    more = f" (and {len(refused) - 8} more)" if len(refused) > 8 else ""
    if mode == "train":
      hint = (
        f"use a new --workdir, or continue this run with the change on purpose: "
        f"--config.allow_changes={','.join(refused)}"
      )
    else:
      hint = f"{mode} reads the model as trained: drop these overrides"
    raise WorkdirError(
      f"{workdir} holds a run trained to step {step} with another config: {shown}{more}; {hint}"
    )
  return changes


def write_record(config, workdir, changes: dict) -> epath.Path:
  """config.json for a training command (after every check passed); an earlier record that
  an allowed change replaces is kept as config-<step>.json."""
  workdir = epath.Path(workdir)
  record = workdir / "config.json"
  text = json.dumps(normalised(config), indent=2, sort_keys=True) + "\n"
  if changes and record.exists():
    step = trained_step(workdir)
    kept = workdir / f"config-{step}.json"
    if not kept.exists():
      files.write_bytes(kept, record.read_bytes())
  files.write_bytes(record, text.encode())
  return record
