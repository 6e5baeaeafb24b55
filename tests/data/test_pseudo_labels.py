import numpy as np
import pytest

from handflow.data import pseudo_labels as pl


def _hands(n=4000, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.uniform(20, 100, (n, 1, 2))
  uv = base + rng.uniform(0, 80, (n, 21, 2))
  return uv, np.ones((n, 21), bool)


def test_deterministic_per_key_and_different_across_keys():
  uv, vis = _hands(50)
  a = pl.simulate(uv, vis, key=(3, 17))
  b = pl.simulate(uv, vis, key=(3, 17))
  c = pl.simulate(uv, vis, key=(3, 18))
  np.testing.assert_array_equal(a.uv, b.uv)
  np.testing.assert_array_equal(a.confidence, b.confidence)
  assert np.abs(a.uv - c.uv).max() > 0


def test_noise_statistics_match_the_config():
  uv, vis = _hands()
  cfg = pl.DetectorConfig(
    noise=0.03, outlier_rate=0.0, swap_rate=0.0, flip_rate=0.0, missing_rate=0.0
  )
  out = pl.simulate(uv, vis, cfg)
  size = pl.hand_size_px(uv)[:, None]
  err = (out.uv - uv) / size[..., None]
  np.testing.assert_allclose(err.std(), 0.03, rtol=0.03)  # per-coordinate std
  assert abs(err.mean()) < 0.002
  occluded = pl.simulate(uv, np.zeros_like(vis), cfg)
  err_occ = (occluded.uv - uv) / size[..., None]
  np.testing.assert_allclose(err_occ.std(), 0.03 * cfg.occluded_scale, rtol=0.03)


def test_outlier_and_missing_rates_match_the_config():
  uv, vis = _hands()
  cfg = pl.DetectorConfig(outlier_rate=0.1, swap_rate=0.0, flip_rate=0.0, missing_rate=0.05)
  out = pl.simulate(uv, vis, cfg)
  assert np.mean(out.is_missing) == pytest.approx(0.05, abs=0.005)
  assert np.mean(out.is_outlier) == pytest.approx(0.1 * 0.95, abs=0.008)
  assert np.all(out.confidence[out.is_missing] == 0) and np.all(out.uv[out.is_missing] == 0)
  # Jumps land far: median error of outliers > 5x that of inliers.
  err = np.linalg.norm(out.uv - uv, axis=-1)
  inl = ~out.is_outlier & ~out.is_missing
  assert np.median(err[out.is_outlier]) > 5 * np.median(err[inl])


def test_swaps_and_flips_exchange_finger_chains():
  uv, vis = _hands(2000)
  cfg = pl.DetectorConfig(
    noise=0.0, outlier_rate=0.0, missing_rate=0.0, swap_rate=0.0, flip_rate=0.5
  )
  out = pl.simulate(uv, vis, cfg)
  flipped = out.is_outlier[:, 1]
  assert flipped.mean() == pytest.approx(0.5, abs=0.05)
  np.testing.assert_allclose(out.uv[flipped][:, 1:5], uv[flipped][:, 17:21], atol=1e-3)
  np.testing.assert_allclose(out.uv[~flipped], uv[~flipped], atol=1e-3)
  swap = pl.simulate(
    uv,
    vis,
    pl.DetectorConfig(noise=0.0, outlier_rate=0.0, missing_rate=0.0, swap_rate=1.0, flip_rate=0.0),
  )
  assert np.all(swap.is_outlier[:, 5:21].sum(-1) == 8)  # exactly two neighbouring chains


def test_confidence_falls_with_the_error():
  uv, vis = _hands()
  out = pl.simulate(uv, vis, pl.DetectorConfig(outlier_rate=0.1))
  ok = ~out.is_missing
  err = np.linalg.norm(out.uv - uv, axis=-1)[ok]
  conf = out.confidence[ok]
  rank = lambda x: np.argsort(np.argsort(x))
  spearman = np.corrcoef(rank(err), rank(conf))[0, 1]
  assert spearman < -0.5
  assert conf[out.is_outlier[ok]].mean() < 0.5 * conf[~out.is_outlier[ok]].mean()


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"keypoints \[\.\.\., 21, 2\]"):
    pl.simulate(np.zeros((3, 16, 2)), np.ones((3, 16), bool))
  with pytest.raises(ValueError, match="'outlier_rate' is a probability"):
    pl.DetectorConfig(outlier_rate=1.5)
  with pytest.raises(ValueError, match="'noise' must be >= 0"):
    pl.DetectorConfig(noise=-1)
