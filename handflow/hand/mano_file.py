"""Official MANO pickles (`MANO_RIGHT.pkl`, `MANO_LEFT.pkl`) without chumpy.

  python -m handflow.hand.mano_file describe /path/to/MANO_RIGHT.pkl
  python -m handflow.hand.mano_file convert /path/to/MANO_RIGHT.pkl [--out=FILE.npz]

The official files are Python 2 pickles holding chumpy arrays and a scipy sparse regressor.
chumpy does not import on Python 3.11 / NumPy >= 1.24, so the unpickler resolves every
`chumpy.*` class to a stand-in that keeps the pickled state, and a chumpy array is read from its
`x` attribute (REFERENCE §1). No chumpy module is registered globally.

The converted model is cached as `<file>.handflow.npz` beside the pickle (or under
`$HANDFLOW_CACHE` / `~/.cache/handflow` when that directory is read-only), written atomically,
and reused while the pickle's size and modification time are unchanged. MANO's licence forbids
redistribution: never commit the pickle or its cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import pickle
import sys

import numpy as np

from handflow import files
from handflow.hand import model as hand_model

_CACHE_VERSION = 1
MANO_SHAPES = {
  "v_template": (778, 3),
  "shapedirs": (778, 3, 10),
  "posedirs": (778, 3, 135),
  "J_regressor": (16, 778),
  "weights": (778, 16),
  "kintree_table": (2, 16),
  "f": (1538, 3),
  "hands_components": (45, 45),
  "hands_mean": (45,),
}
# smplx's fingertip vertices (thumb, index, middle, ring, pinky): the default tips of MANO.
MANO_DEFAULT_TIPS = (744, 320, 443, 554, 671)


class _ChumpyStandIn:
  """Receives a chumpy object's pickled state; `x` holds the array of a `Ch`."""

  def __setstate__(self, state):
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form.
      state = {**(state[0] or {}), **(state[1] or {})}
    self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _Unpickler(pickle.Unpickler):
  def find_class(self, module, name):
    if module == "chumpy" or module.startswith("chumpy."):
      return type(name, (_ChumpyStandIn,), {"__module__": module})
    return super().find_class(module, name)


def _to_array(value, key: str, source: str) -> np.ndarray:
  if isinstance(value, _ChumpyStandIn):
    if "x" not in value.__dict__:
      raise hand_model.ModelFileError(
        f"{source}: key '{key}' is a chumpy {type(value).__name__} without an 'x' array; "
        "this loader reads chumpy arrays (Ch) only"
      )
    value = value.__dict__["x"]
  if hasattr(value, "toarray"):  # scipy.sparse (J_regressor).
    value = value.toarray()
  return np.asarray(value)


def read_pickle(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """The raw arrays of an official MANO pickle, validated against MANO's shapes."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
      f"MANO file not found: {path} (download MANO_RIGHT.pkl / MANO_LEFT.pkl from the MANO "
      "website after accepting its licence; handflow cannot ship it)"
    )
  try:
    with path.open("rb") as f:
      raw = _Unpickler(f, encoding="latin1").load()
  except Exception as e:
    raise hand_model.ModelFileError(f"{path}: not a readable MANO pickle ({e!r})") from e
  if not isinstance(raw, dict):
    raise hand_model.ModelFileError(f"{path}: expected a dict, got {type(raw).__name__}")
  out = {}
  for key, shape in MANO_SHAPES.items():
    if key not in raw:
      raise hand_model.ModelFileError(f"{path}: missing key '{key}' (MANO files hold {shape})")
    arr = _to_array(raw[key], key, str(path))
    if arr.shape != shape:
      raise hand_model.ModelFileError(
        f"{path}: key '{key}' has shape {arr.shape}, MANO's is {shape}"
      )
    out[key] = arr
  return out


def side_of(path: pathlib.Path) -> str:
  """'right' or 'left', from the file name (the official files say which)."""
  stem = path.name.upper()
  if "LEFT" in stem:
    return "left"
  if "RIGHT" in stem:
    return "right"
  raise hand_model.ModelFileError(
    f"{path}: cannot tell the hand side from the file name; rename it MANO_RIGHT.pkl or "
    "MANO_LEFT.pkl"
  )


def to_schema(arrays: dict[str, np.ndarray], path: pathlib.Path) -> dict[str, np.ndarray]:
  """MANO pickle arrays -> handflow's hand-model schema (see `handflow.hand.model`)."""
  kintree = arrays["kintree_table"].astype(np.int64)
  parents = kintree[0].copy()
  parents[0] = -1  # MANO stores 2**32 - 1 for the root.
  side = side_of(path)
  return dict(
    v_template=arrays["v_template"],
    shapedirs=arrays["shapedirs"],
    posedirs=arrays["posedirs"],
    J_regressor=arrays["J_regressor"],
    weights=arrays["weights"],
    parents=parents,
    faces=arrays["f"],
    hands_components=arrays["hands_components"],
    hands_mean=arrays["hands_mean"],
    tip_vertex_ids=np.asarray(MANO_DEFAULT_TIPS),
    name=np.asarray(f"mano_{side}"),
    side=np.asarray(side),
  )


def _cache_path(path: pathlib.Path) -> pathlib.Path:
  beside = path.with_name(path.name + ".handflow.npz")
  if os.access(path.parent, os.W_OK):
    return beside
  root = pathlib.Path(os.environ.get("HANDFLOW_CACHE", "~/.cache/handflow")).expanduser()
  digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
  return root / f"{path.stem}.{digest}.handflow.npz"


def _fingerprint(path: pathlib.Path) -> np.ndarray:
  st = path.stat()
  return np.asarray([_CACHE_VERSION, st.st_size, st.st_mtime_ns], np.int64)


def convert(path: str | pathlib.Path, out: str | pathlib.Path | None = None) -> pathlib.Path:
  """Converts a MANO pickle to a validated handflow `.npz`; returns its path."""
  path = pathlib.Path(path).expanduser()
  schema = to_schema(read_pickle(path), path)
  schema = {
    **hand_model.validate_arrays(schema, str(path)),
    "name": schema["name"],
    "side": schema["side"],
    "source_fingerprint": _fingerprint(path),
  }
  dest = pathlib.Path(out) if out is not None else _cache_path(path)
  files.write_atomic(dest, lambda f: np.savez(f, **schema))
  return dest


def load_mano(path: str | pathlib.Path) -> hand_model.HandModel:
  """Loads an official MANO pickle through its cache (converting it on first use)."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    read_pickle(path)  # raises the helpful FileNotFoundError.
  cache = _cache_path(path)
  if cache.is_file():
    try:
      with np.load(cache, allow_pickle=False) as z:
        fresh = "source_fingerprint" in z.files and np.array_equal(
          z["source_fingerprint"], _fingerprint(path)
        )
    except Exception:  # noqa: BLE001 - a broken cache is rebuilt, not trusted.
      fresh = False
    if fresh:
      return hand_model.load_npz(cache)
  return hand_model.load_npz(convert(path, cache))


def fix_left_shapedirs(left: dict, right: dict) -> dict:
  """Returns `left` with MANO's known left-hand shapedirs bug fixed.

  The released MANO_LEFT.pkl has the x component of its shape directions equal to the right
  hand's instead of mirrored (smplx issue #48); the fix negates it. Applied only when the bug is
  present, so a corrected file stays as it is. Arrays in MANO's pickle layout [778, 3, 10].
  """
  l_sd, r_sd = np.asarray(left["shapedirs"]), np.asarray(right["shapedirs"])
  if np.abs(l_sd[:, 0] - r_sd[:, 0]).sum() < 1:
    l_sd = l_sd.copy()
    l_sd[:, 0] *= -1
    return {**left, "shapedirs": l_sd}
  return left


def describe(path: str | pathlib.Path) -> str:
  """A human-readable summary of a MANO pickle or a handflow hand-model `.npz`."""
  path = pathlib.Path(path)
  m = load_mano(path) if path.suffix == ".pkl" else hand_model.load_npz(path)
  verts = np.asarray(m.v_template).T
  lo, hi = verts.min(0), verts.max(0)
  lines = [
    f"{path}",
    f"  name {m.name}, side {m.side}",
    f"  vertices {m.num_vertices}, triangles {len(m.faces)}, joints {m.num_joints}",
    f"  shape directions {m.num_betas}, pose blend features {m.posedirs.shape[0]}",
    f"  bounding box (m) min {np.round(lo, 4).tolist()} max {np.round(hi, 4).tolist()}",
    f"  fingertip vertices (thumb..pinky) {list(m.tip_vertex_ids)}",
    f"  MANO topology: {m.is_mano_topology}",
  ]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m handflow.hand.mano_file")
  sub = parser.add_subparsers(dest="cmd", required=True)
  p_desc = sub.add_parser("describe", help="summarise a MANO .pkl or a handflow .npz")
  p_desc.add_argument("path", type=pathlib.Path)
  p_conv = sub.add_parser("convert", help="convert a MANO .pkl to a handflow .npz")
  p_conv.add_argument("path", type=pathlib.Path)
  p_conv.add_argument("--out", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  try:
    if args.cmd == "describe":
      print(describe(args.path))
    else:
      print(f"wrote {convert(args.path, args.out)}")
  except (FileNotFoundError, hand_model.ModelFileError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
