"""Fixtures of the hand tests: a fabricated MANO-shaped pickle (no MANO data exists here).

The pickle is built like the official files: a protocol-2 dict whose arrays are chumpy `Ch`
objects (state dict with `x`), a scipy sparse `J_regressor`, kintree_table with 2**32-1 at the
root, plus the extra keys of the real files. The `chumpy` modules exist only while pickling,
so loading must go through handflow's stand-in unpickler.
"""

import pickle
import sys
import types

import pytest
from scipy import sparse

from handflow.hand.testing import random_mano_arrays

fake_mano_arrays = random_mano_arrays


def write_fake_mano_pickle(path, arrays):
  """Writes `arrays` like an official MANO pickle, with chumpy `Ch` objects."""
  chumpy = types.ModuleType("chumpy")
  ch = types.ModuleType("chumpy.ch")

  class Ch:
    def __init__(self, x):
      self.x = x
      self._dirty_vars = set()

  Ch.__module__ = "chumpy.ch"
  Ch.__qualname__ = "Ch"
  ch.Ch = Ch
  chumpy.ch = ch
  sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
  try:
    data = {k: Ch(v) for k, v in arrays.items() if k in ("v_template", "shapedirs", "posedirs")}
    data.update({k: v for k, v in arrays.items() if k not in data})
    data["J_regressor"] = sparse.csc_matrix(arrays["J_regressor"])
    data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
    with open(path, "wb") as fh:
      pickle.dump(data, fh, protocol=2)
  finally:
    del sys.modules["chumpy"], sys.modules["chumpy.ch"]


@pytest.fixture(scope="session")
def mano_arrays():
  return fake_mano_arrays()


@pytest.fixture(scope="session")
def mano_pkl(tmp_path_factory, mano_arrays):
  path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
  write_fake_mano_pickle(path, mano_arrays)
  return path


@pytest.fixture(scope="session")
def mano_model(mano_pkl):
  from handflow.hand import mano_file

  return mano_file.load_mano(mano_pkl)


@pytest.fixture(scope="session")
def open_model():
  from handflow import hand

  return hand.load("open", "right")
