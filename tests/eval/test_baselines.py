import numpy as np
import pytest

from handflow.eval import baselines, protocols
from handflow.hand import rotations


def _hand(rng, p=21):
  return rng.normal(size=(p, 3)) * 0.04


def _similar(rng, x, n):
  """n random similarity transforms of x [p, 3] -> [n, p, 3]."""
  R = np.asarray(rotations.axis_angle_to_matrix(rng.normal(size=(n, 3))))
  s = rng.uniform(0.5, 2.0, size=(n, 1, 1))
  t = rng.normal(size=(n, 1, 3))
  return s * np.einsum("nij,pj->npi", R, x) + t


def test_mean_of_one_shape_under_similarities_is_that_shape():
  rng = np.random.default_rng(0)
  x = _hand(rng)
  ref = baselines.mean_hand(_similar(rng, x, 50))
  # The constant then scores 0 after Procrustes, against every copy.
  err = baselines.constant_metrics(ref, _similar(rng, x, 7), ["freihand"])
  assert set(err) == {"freihand/PA-MPJPE"}
  assert err["freihand/PA-MPJPE"] < 1e-3  # mm


def test_mean_of_two_shapes_is_their_midpoint():
  rng = np.random.default_rng(1)
  a = _hand(rng)
  b = a + rng.normal(size=a.shape) * 0.004  # a nearby articulation
  pts = np.concatenate([_similar(rng, a, 40), _similar(rng, b, 40)])
  ref = baselines.mean_hand(pts)
  mid = baselines.constant_metrics(ref, ((a + b) / 2)[None], ["freihand"])["freihand/PA-MPJPE"]
  to_a = baselines.constant_metrics(ref, a[None], ["freihand"])["freihand/PA-MPJPE"]
  to_b = baselines.constant_metrics(ref, b[None], ["freihand"])["freihand/PA-MPJPE"]
  assert mid < 0.1 * min(to_a, to_b)
  assert to_a == pytest.approx(to_b, rel=0.2)


def test_spread_is_zero_for_one_shape_and_ignores_each_samples_pose():
  rng = np.random.default_rng(2)
  a = _hand(rng)
  assert baselines.spread(_similar(rng, a, 30)) < 1e-3  # mm
  varied = a + rng.normal(size=(30, 21, 3)) * 0.005  # 30 articulations around a
  before = baselines.spread(varied)
  R = np.asarray(rotations.axis_angle_to_matrix(rng.normal(size=(30, 3))))
  moved = np.einsum("nij,npj->npi", R, varied) + rng.normal(size=(30, 1, 3))  # rigid, each
  # (a sample's scale would change the set's mean size, at which the spread is measured)
  assert baselines.spread(moved) == pytest.approx(before, rel=1e-3)
  # Per-joint N(0, 5 mm^2) offsets: a mean distance near 5 mm * E|N(0, I_3)| = 8 mm, less the
  # share the alignment absorbs; a collapsed set (1% of the offsets) shows 1% of the spread.
  assert 5.0 < before < 8.0
  assert baselines.spread(a + (varied - a) * 0.01) == pytest.approx(before * 0.01, rel=0.05)


def test_constant_metrics_match_the_scorer():
  """Parity with `protocols.evaluate` on the constant broadcast over the samples."""
  rng = np.random.default_rng(2)
  gt = np.stack([_hand(rng) for _ in range(9)])
  ref = _hand(rng)
  want = protocols.evaluate("freihand", np.broadcast_to(ref, gt.shape), gt)["PA-MPJPE"]
  got = baselines.constant_metrics(ref, gt, ["freihand"])["freihand/PA-MPJPE"]
  assert got == pytest.approx(want, rel=1e-4)
  # DexYCB's invalid ground truth (all -1) is skipped as its scorer does.
  bad = np.concatenate([gt, -np.ones((3, 21, 3))])
  got = baselines.constant_metrics(ref, bad, ["dexycb"])
  assert got["dexycb/PA-MPJPE"] == pytest.approx(
    baselines.constant_metrics(ref, gt, ["dexycb"])["dexycb/PA-MPJPE"], rel=1e-5
  )


def test_labelled_points_reads_only_selected_images_up_to_the_limit():
  xyz = np.arange(6 * 21 * 3, dtype=np.float32).reshape(6, 1, 21, 3)
  batches = [{"xyz": xyz[:3], "keep": np.array([1, 0, 1])}, {"xyz": xyz[3:], "keep": np.ones(3)}]
  got = baselines.labelled_points(batches, lambda b: b["keep"])
  np.testing.assert_array_equal(got, xyz[[0, 2, 3, 4, 5], 0])
  got = baselines.labelled_points(iter(batches), lambda b: b["keep"], limit=3)
  np.testing.assert_array_equal(got, xyz[[0, 2, 3], 0])
  assert baselines.labelled_points(batches, lambda b: 0 * b["keep"]).shape == (0, 21, 3)


def test_mean_hand_names_a_wrong_shape():
  with pytest.raises(ValueError, match=r"\[n > 0, p, 3\], got \(21, 3\)"):
    baselines.mean_hand(np.zeros((21, 3)))
