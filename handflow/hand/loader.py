"""The hand model named by a config string: the one place that knows both model files.

`model.py` holds the schema and the `.npz` reader, `mano_file.py` the MANO pickle reader (which
builds on the schema); this module dispatches between them, so neither imports the other back.
"""

from __future__ import annotations

import pathlib

from handflow.hand import mano_file
from handflow.hand import model as model_lib


def load(spec: str = "open", side: str = "right") -> model_lib.HandModel:
  """The hand model named by a config string.

  spec: "open" (the shipped CC0 hand), a path to an official `MANO_{RIGHT,LEFT}.pkl`
  (converted once and cached, see `handflow.hand.mano_file`), or a path to an `.npz` in
  handflow's schema.
  """
  if side not in model_lib.SIDES:
    raise ValueError(f"hand side must be one of {model_lib.SIDES}, got '{side}'")
  if spec == "open":
    return model_lib.load_npz(model_lib.ASSETS / f"open_hand_{side}.npz")
  path = pathlib.Path(spec).expanduser()
  if path.suffix == ".pkl":
    model = mano_file.load_mano(path)
  elif path.suffix == ".npz":
    model = model_lib.load_npz(path)
  else:
    raise ValueError(
      f"hand model '{spec}': expected 'open', a MANO .pkl path or a handflow .npz path"
    )
  if model.side != side:
    raise ValueError(f"hand model {path} is a {model.side} hand but side='{side}' was asked for")
  return model
