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
  cfg = pl.preset("clean", noise=0.03)
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
  cfg = pl.preset("clean", outlier_rate=0.1, missing_rate=0.05)
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
  cfg = pl.preset("clean", noise=0.0, flip_rate=0.5)
  out = pl.simulate(uv, vis, cfg)
  flipped = out.is_outlier[:, 1]
  assert flipped.mean() == pytest.approx(0.5, abs=0.05)
  np.testing.assert_allclose(out.uv[flipped][:, 1:5], uv[flipped][:, 17:21], atol=1e-3)
  np.testing.assert_allclose(out.uv[~flipped], uv[~flipped], atol=1e-3)
  swap = pl.simulate(
    uv,
    vis,
    pl.preset("clean", noise=0.0, swap_rate=1.0),
  )
  assert np.all(swap.is_outlier[:, 5:21].sum(-1) == 8)  # exactly two neighbouring chains


def test_confidence_falls_with_the_error():
  uv, vis = _hands()
  out = pl.simulate(uv, vis, pl.preset("iid", outlier_rate=0.1))
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
  with pytest.raises(ValueError, match="'noise' must be a number >= 0"):
    pl.DetectorConfig(noise=-1)
  with pytest.raises(ValueError, match="unknown pseudo-label preset 'nope'"):
    pl.from_config({"preset": "nope"})
  with pytest.raises(ValueError, match=r"data.pseudo_labels.\['nois'\]"):
    pl.from_config({"preset": "default", "nois": 0.1})
  with pytest.raises(ValueError, match="source='detector'"):
    pl.from_config({"source": "detector"})
  with pytest.raises(ValueError, match=r"view_axes must be \[v=3, 3\]"):
    pl.simulate(np.zeros((2, 3, 21, 2)), np.ones((2, 3, 21), bool), key=1, view_axes=np.eye(2))


def _clips(n=200, t=6, v=8, seed=0):
  uv, vis = _hands(n * t * v, seed)
  axes = np.random.default_rng(seed).normal(size=(v, 3))
  return uv.reshape(n, t, v, 21, 2), vis.reshape(n, t, v, 21), axes


def test_events_hit_a_cone_of_views_and_persist():
  uv, vis, axes = _clips()
  cfg = pl.preset("clean", noise=0.0, event_rate=0.02, cone_deg=60.0, persist=3.0)
  out = pl.simulate(uv, vis, cfg, key=5, view_axes=axes)
  ax = axes / np.linalg.norm(axes, axis=-1, keepdims=True)
  near = ax @ ax.T >= np.cos(np.deg2rad(60.0))
  hit = out.event > 0  # [n, t, v]
  # Coherent across views: a hit view's cone neighbours are hit far more often than chance.
  both = np.einsum("ntv,ntw->vw", hit, hit.astype(float))
  rate = hit.mean()
  off = ~np.eye(8, dtype=bool)
  assert (both / hit.sum((0, 1))[:, None])[near & off].mean() > 5 * rate
  # Persistent over frames: P(hit at f+1 | hit at f) well above the base rate.
  assert (hit[:, 1:] & hit[:, :-1]).sum() / hit[:, :-1].sum() > 0.5
  # Every event moved keypoints and is flagged; the rest is exact.
  np.testing.assert_allclose(out.uv[~hit], uv[~hit], atol=1e-3)
  assert np.all(out.is_outlier[hit].any(-1))
  # Without view axes an event stays in its view.
  solo = pl.simulate(uv, vis, cfg, key=5)
  hit = solo.event > 0
  both = np.einsum("ntv,ntw->vw", hit, hit.astype(float))
  assert (both / hit.sum((0, 1))[:, None])[off].mean() < 2 * hit.mean()  # chance level


def test_mirror_reflects_about_the_wrist_to_middle_line():
  uv, vis = _hands(4)
  out = pl._mirror(uv, np.ones(4, bool))
  np.testing.assert_allclose(out[:, [0, 9]], uv[:, [0, 9]], atol=1e-9)
  # A reflection keeps distances to the axis points and flips the side of every keypoint.
  d = lambda x, i: np.linalg.norm(x - x[:, i : i + 1], axis=-1)
  np.testing.assert_allclose(d(out, 0), d(uv, 0), atol=1e-9)

  def cross(x):
    a, b = x[:, 9] - x[:, 0], x[:, 4] - x[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]

  assert np.all(np.sign(cross(out)) == -np.sign(cross(uv)))


def test_confident_failures_and_whole_view_misses():
  uv, vis, axes = _clips(100)
  sure = pl.simulate(uv, vis, pl.preset("clean", outlier_rate=0.2, confident_rate=1.0), key=2)
  shy = pl.simulate(uv, vis, pl.preset("clean", outlier_rate=0.2, confident_rate=0.0), key=2)
  ok = ~sure.is_outlier & ~sure.is_missing
  # Confidently wrong: outliers' confidence looks like inliers'; otherwise it falls.
  assert sure.confidence[sure.is_outlier].mean() > 0.8 * sure.confidence[ok].mean()
  assert shy.confidence[shy.is_outlier].mean() < 0.3 * shy.confidence[ok].mean()
  miss = pl.simulate(uv, vis, pl.preset("clean", view_miss_rate=0.4), key=3)
  whole = miss.is_missing.all(-1)
  assert whole.mean() == pytest.approx(0.4, abs=0.03)
  assert np.all(miss.is_missing == whole[..., None])


def test_presets_order_from_clean_to_hard():
  uv, vis, axes = _clips(60)
  err = {}
  for name in ("clean", "default", "hard"):
    out = pl.simulate(uv, vis, pl.preset(name), key=1, view_axes=axes)
    det = ~out.is_missing
    e = np.linalg.norm(out.uv - uv, axis=-1)[det]
    err[name] = (np.mean(e > 20), det.mean())
  assert err["clean"][0] < err["default"][0] < err["hard"][0]
  assert err["clean"][1] > err["default"][1] > err["hard"][1]
