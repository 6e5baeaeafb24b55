import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from handflow.hand import mano_file
from handflow.hand import model as hand_model
from tests.hand.conftest import fake_mano_arrays, write_fake_mano_pickle


def test_loads_without_chumpy_and_keeps_values(mano_pkl, mano_arrays, mano_model):
  assert "chumpy" not in sys.modules
  raw = mano_file.read_pickle(mano_pkl)
  np.testing.assert_allclose(raw["J_regressor"], mano_arrays["J_regressor"])
  np.testing.assert_allclose(raw["shapedirs"], mano_arrays["shapedirs"])
  assert mano_model.name == "mano_right" and mano_model.side == "right"
  assert mano_model.is_mano_topology and mano_model.num_betas == 10
  assert mano_model.parents == hand_model.MANO_PARENTS
  np.testing.assert_allclose(
    np.asarray(mano_model.v_template).T, mano_arrays["v_template"], atol=1e-7
  )  # float32 cast only


def test_cache_is_written_and_reused(tmp_path, mano_arrays):
  pkl = tmp_path / "MANO_LEFT.pkl"
  write_fake_mano_pickle(pkl, mano_arrays)
  m = mano_file.load_mano(pkl)
  cache = tmp_path / "MANO_LEFT.pkl.handflow.npz"
  assert cache.is_file() and m.side == "left"
  mtime = cache.stat().st_mtime_ns
  mano_file.load_mano(pkl)
  assert cache.stat().st_mtime_ns == mtime  # reused, not rewritten
  # A changed pickle invalidates the cache.
  write_fake_mano_pickle(pkl, fake_mano_arrays(seed=1))
  os.utime(pkl, ns=(mtime + 10**9, mtime + 10**9))
  m2 = mano_file.load_mano(pkl)
  assert not np.allclose(m2.v_template, m.v_template)
  # A corrupt cache is rebuilt, not trusted.
  cache.write_bytes(b"garbage")
  np.testing.assert_allclose(mano_file.load_mano(pkl).v_template, m2.v_template)


def test_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
    mano_file.load_mano(tmp_path / "MANO_RIGHT.pkl")


@pytest.mark.parametrize(
  "mutate, match",
  [
    (lambda a: a.pop("weights"), "missing key 'weights'"),
    (lambda a: a.update(shapedirs=np.zeros((778, 3, 9))), r"'shapedirs' has shape \(778, 3, 9\)"),
    (lambda a: a.update(f=np.zeros((10, 3), np.uint32)), r"'f' has shape \(10, 3\)"),
  ],
)
def test_bad_keys_and_shapes_are_named(tmp_path, mano_arrays, mutate, match):
  arrays = dict(mano_arrays)
  mutate(arrays)
  pkl = tmp_path / "MANO_RIGHT.pkl"
  write_fake_mano_pickle(pkl, arrays)
  with pytest.raises(hand_model.ModelFileError, match=match) as err:
    mano_file.load_mano(pkl)
  assert str(pkl) in str(err.value)
  assert not (tmp_path / "MANO_RIGHT.pkl.handflow.npz").exists()  # nothing half-written


def test_nan_and_bad_weights_are_refused(tmp_path, mano_arrays):
  arrays = dict(mano_arrays, weights=mano_arrays["weights"] * 2)
  pkl = tmp_path / "MANO_RIGHT.pkl"
  write_fake_mano_pickle(pkl, arrays)
  with pytest.raises(hand_model.ModelFileError, match="'weights'.*sum to 1"):
    mano_file.load_mano(pkl)
  v = mano_arrays["v_template"].copy()
  v[3, 1] = np.nan
  write_fake_mano_pickle(pkl, dict(mano_arrays, v_template=v))
  with pytest.raises(hand_model.ModelFileError, match="'v_template' contains NaN"):
    mano_file.load_mano(pkl)


def test_not_a_pickle_and_unknown_side(tmp_path, mano_arrays):
  bad = tmp_path / "MANO_RIGHT.pkl"
  bad.write_bytes(b"\x80\x02not really")
  with pytest.raises(hand_model.ModelFileError, match="not a readable MANO pickle"):
    mano_file.load_mano(bad)
  odd = tmp_path / "hand.pkl"
  write_fake_mano_pickle(odd, mano_arrays)
  with pytest.raises(hand_model.ModelFileError, match="cannot tell the hand side"):
    mano_file.load_mano(odd)
  plain = tmp_path / "MANO_RIGHT_list.pkl"
  plain.write_bytes(pickle.dumps([1, 2]))
  with pytest.raises(hand_model.ModelFileError, match="expected a dict"):
    mano_file.load_mano(plain)


def test_left_shapedirs_fix():
  right = {"shapedirs": np.random.default_rng(0).normal(size=(778, 3, 10))}
  left = mano_file.fix_left_shapedirs(dict(right), right)
  np.testing.assert_allclose(left["shapedirs"][:, 0], -right["shapedirs"][:, 0])
  np.testing.assert_allclose(left["shapedirs"][:, 1:], right["shapedirs"][:, 1:])
  # An already mirrored file is left alone.
  assert mano_file.fix_left_shapedirs(left, right) is left


def test_cli_describe_and_convert(tmp_path, mano_pkl):
  out = tmp_path / "converted.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run(
    [sys.executable, "-m", "handflow.hand.mano_file", *a], capture_output=True, text=True, env=env
  )
  r = run("convert", str(mano_pkl), f"--out={out}")
  assert r.returncode == 0, r.stderr
  assert hand_model.load_npz(out).num_vertices == 778
  r = run("describe", str(out))
  assert r.returncode == 0 and "vertices 778, triangles 1538, joints 16" in r.stdout
  r = run("describe", str(tmp_path / "MANO_RIGHT.pkl"))
  assert r.returncode == 2 and "MANO file not found" in r.stderr
