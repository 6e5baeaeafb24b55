"""Runs made of stages, one command: HandMIM pre-trains, fine-tunes from it, and fine-tunes the
same model from scratch, then compares the two (configs/handmim.py).

A config with `stages` = {"order": (names...), "compare": (names...), name: overrides, ...} is
the final stages' config; each stage is that config with its overrides merged in (nested dicts
merge key by key; `apply`). A value "stage:<name>" for `init_from.workdir` is that stage's
workdir. Each stage runs in `<workdir>/<name>` as a whole run of its own (checkpoints, metrics,
results); a stage whose run finished (results.json after its last step) is reused, so an
interrupted command resumes where it stopped. `compare` lists the stages whose test results
make `<workdir>/results.{md,json}`.

eval and predict apply to every compared stage.
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from handflow import checkpoint, files, modes, preflight
from handflow.data import prepare

PREFIX = "stage:"


def _merge(base: dict, over: dict, where: str = "") -> dict:
  out = dict(base)
  for k, v in over.items():
    if k not in base:
      raise ValueError(f"config stages: override '{where}{k}' is not a key of the config")
    if isinstance(v, dict) and v and isinstance(base[k], dict):
      out[k] = _merge(base[k], v, f"{where}{k}.")
    else:
      out[k] = v
  return out


def apply(config, overrides) -> ml_collections.ConfigDict:
  """`config` (without its `stages`) with `overrides` (a nested dict) merged in."""
  base = config.to_dict()
  base.pop("stages", None)
  over = overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides)
  return ml_collections.ConfigDict(_merge(base, over))


def stage_config(config, name: str, workdir) -> ml_collections.ConfigDict:
  """Stage `name`'s whole config, its "stage:" references resolved against `workdir`."""
  st = config.stages
  if name not in st:
    raise ValueError(f"config stages.order names '{name}', but stages has no '{name}' entry")
  c = apply(config, st[name])
  src = str(c.get("init_from", {}).get("workdir", "") or "")
  if src.startswith(PREFIX):
    ref = src[len(PREFIX) :]
    order = list(st.order)
    if ref not in order or order.index(ref) >= order.index(name):
      raise ValueError(
        f"config stages.{name}.init_from.workdir = '{src}': not an earlier stage of {order}"
      )
    c.init_from.workdir = str(epath.Path(workdir) / ref)
  return c


def check(config, workdir) -> list:
  """Every stage's config through the preflight's method check (config errors before any
  work); returns [(name, config)]."""
  out = []
  for name in config.stages.order:
    c = stage_config(config, name, workdir)
    preflight.check_method(c)
    out.append((name, c))
  return out


def finished(config, workdir) -> bool:
  """The stage's run reached its last step and wrote its results."""
  workdir = epath.Path(workdir)
  ckpts = workdir / "checkpoints"
  if not (workdir / "results.json").exists() or not ckpts.exists():
    return False
  return checkpoint.Checkpointer(ckpts).latest_step() == int(config.num_steps)


def run(mode: str, config, workdir) -> dict:
  """Runs `mode` over the stages; returns {stage: results}."""
  workdir = epath.Path(workdir)
  results = {}
  for name, c in check(config, workdir):
    sub = workdir / name
    if mode == "train":  # eval and predict never rewrite a run's record
      sub.mkdir(parents=True, exist_ok=True)
      preflight.save_config(c, sub)
    if mode != "train" and name not in config.stages.compare:
      continue
    if mode == "train" and finished(c, sub):
      print(f"handflow: stage '{name}' finished earlier in {sub}: reused", flush=True)
      results[name] = json.loads((sub / "results.json").read_text())
      continue
    if c.data.name in prepare.BUILDABLE:
      prepare.prepare(c)
    print(f"handflow: stage '{name}' ({c.method}, {c.num_steps} steps) in {sub}", flush=True)
    results[name] = modes.run(mode, c, sub)
  if mode in ("train", "eval"):
    write_comparison(config, workdir, {k: results[k] for k in config.stages.compare})
  return results


def write_comparison(config, workdir, results: dict):
  """results.{md,json}: the compared stages' test metrics side by side, and in the markdown the
  constant the stages' own reports score (the training images' mean hand, `eval.baselines`):
  one column when every stage read the same labels, else one per stage."""
  rows = {name: r.get("trained", {}) for name, r in results.items()}
  keys = sorted({k for r in rows.values() for k in r if isinstance(r[k], int | float)})
  table = dict(rows)
  consts = {n: r["mean_hand"] for n, r in results.items() if r.get("mean_hand")}
  if consts and all(c == next(iter(consts.values())) for c in consts.values()):
    table["mean hand (constant)"] = next(iter(consts.values()))
  else:
    table.update({f"mean hand of {n}'s labels (constant)": c for n, c in consts.items()})
  names = list(table)
  lines = [
    f"# {config.method}: stages compared on the test split (scored once per stage)",
    "",
    "| metric | " + " | ".join(names) + " |",
    "|---|" + "---|" * len(names),
  ]
  fmt = lambda v: "–" if v is None else f"{v:.4g}"
  for k in keys:
    lines.append(f"| {k} | " + " | ".join(fmt(table[n].get(k)) for n in names) + " |")
  lines += ["", "Per-stage reports: " + ", ".join(f"{n}/results.md" for n in rows), ""]
  text = "\n".join(lines)
  workdir = epath.Path(workdir)
  files.write_bytes(workdir / "results.md", text.encode())
  files.write_bytes(workdir / "results.json", json.dumps(rows, indent=1, sort_keys=True).encode())
  print(text)
