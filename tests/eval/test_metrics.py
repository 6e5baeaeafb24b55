import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow.eval import metrics


def test_point_errors_known_answer():
  pred = jnp.asarray([[[0.0, 0.0, 0.0], [0.003, 0.004, 0.0]]])
  gt = jnp.zeros((1, 2, 3))
  np.testing.assert_allclose(metrics.point_errors(pred, gt), [[0.0, 0.005]], atol=1e-9)


def test_mean_error_and_auc_known_answer():
  # Two keypoints, two samples; keypoint 0 errors 10 and 30 mm, keypoint 1 errors 0 and 60 mm.
  err = jnp.asarray([[0.010, 0.0], [0.030, 0.060]])
  out = metrics.finalize(metrics.batch_stats({"E": err}))
  assert out["E"] == pytest.approx((20.0 + 30.0) / 2)
  # PCK(t) per keypoint, AUC by the trapezoid over 0-50 mm, normalised, then averaged.
  t = metrics.THRESHOLDS_M
  pck0 = ((0.010 <= t).astype(float) + (0.030 <= t)) / 2
  pck1 = ((0.0 <= t).astype(float) + (0.060 <= t)) / 2
  want = np.mean([np.trapezoid(c, t) / np.trapezoid(np.ones_like(t), t) for c in (pck0, pck1)])
  assert out["AUC_E"] == pytest.approx(want, abs=1e-6)
  # By hand for keypoint 0: PCK is 0 below 10 mm, 0.5 from 10 to 30 mm, 1 above: AUC ~ 0.6.
  assert np.trapezoid(pck0, t) / 0.05 == pytest.approx(0.6, abs=0.01)


def test_pck_uses_less_or_equal():
  stats = metrics.batch_stats({"E": jnp.asarray([[float(metrics.THRESHOLDS_M[10])]])})
  assert float(stats.dist["E"]["pck"][0, 10]) == 1.0


def test_fscore_known_answer():
  gt = jnp.asarray([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
  pred = jnp.asarray([[[0.0, 0.0, 0.004], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0]]])
  # Pred->gt: 4 mm, 0 mm, 0.5 m -> precision@5mm = 2/3; gt->pred: 0, 0.5 m -> recall = 1/2.
  p, r = 2 / 3, 1 / 2
  np.testing.assert_allclose(metrics.fscore(pred, gt, (0.005,)), [[2 * p * r / (p + r)]], atol=1e-6)
  # Strict <: a point exactly at the threshold does not count; both zero gives F = 0.
  at = jnp.asarray([[[0.0, 0.0, 0.0]]])
  np.testing.assert_allclose(
    metrics.fscore(at + jnp.asarray([0.0, 0.0, 0.25]), at, (0.25,)), [[0.0]]
  )


def test_nearest_distances_match_brute_force():
  rng = np.random.default_rng(0)
  a = rng.normal(0.3, 0.05, (2, 778, 3)).astype(np.float32) + 0.5  # far from the origin
  b = a + rng.normal(0, 0.003, a.shape).astype(np.float32)
  d = np.linalg.norm(a[:, :, None] - b[:, None], axis=-1)
  d_ab, d_ba = metrics.nearest_distances(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(d_ab, d.min(-1), atol=2e-6)
  np.testing.assert_allclose(d_ba, d.min(-2), atol=2e-6)


def test_streaming_equals_one_shot_with_padding_and_masks():
  rng = np.random.default_rng(1)
  err = jnp.asarray(rng.uniform(0, 0.06, (37, 21)))
  score = jnp.asarray(rng.uniform(0, 1, (37,)))
  kmask = jnp.asarray(rng.uniform(size=(37, 21)) > 0.1)
  one = metrics.finalize(metrics.batch_stats({"E": err}, {"F": score}, point_masks={"E": kmask}))
  total = None
  for lo, hi in ((0, 5), (5, 21), (21, 37)):  # uneven batches, each padded to 16 with NaN
    pad = 16 - (hi - lo)
    e = jnp.pad(err[lo:hi], ((0, max(pad, 0)), (0, 0)), constant_values=np.nan)
    s = jnp.pad(score[lo:hi], (0, max(pad, 0)), constant_values=np.nan)
    km = jnp.pad(kmask[lo:hi], ((0, max(pad, 0)), (0, 0)))
    sm = jnp.arange(e.shape[0]) < (hi - lo)
    st = jax.jit(metrics.batch_stats)({"E": e}, {"F": s}, sm, {"E": km})
    total = st if total is None else total + st
  got = metrics.finalize(total)
  for k in one:
    assert got[k] == pytest.approx(one[k], rel=1e-5), k
  # Not the mean of batch means:
  means = [float(jnp.mean(score[lo:hi])) for lo, hi in ((0, 5), (5, 21), (21, 37))]
  assert abs(np.mean(means) - got["F"]) > 1e-4


def test_pck_2d():
  uv = jnp.zeros((2, 21, 2))
  gt = uv.at[0, :5, 0].set(10.0)
  assert float(metrics.pck_2d(uv, gt, 5.0)) == pytest.approx(37 / 42)


def test_pck_counts_match_dense_comparison_at_the_edges():
  t = metrics.THRESHOLDS_M
  rng = np.random.default_rng(2)
  err = np.concatenate(
    [
      rng.uniform(0, 0.07, (50, 7)),
      np.broadcast_to(t[[0, 1, 50, 98, 99, 3, 7]], (3, 7)),
      np.broadcast_to(np.nextafter(t[[5, 6, 50, 98, 99, 3, 1]], 1), (2, 7)),
    ]
  )
  m = (rng.uniform(size=err.shape) > 0.2).astype(float)
  for dtype in (np.float32, np.float64):
    e = err.astype(dtype)
    want = np.sum((e[..., None] <= t.astype(dtype)) * m[..., None], axis=0)
    with jax.enable_x64(dtype == np.float64):
      got = metrics.batch_stats({"E": jnp.asarray(e)}, point_masks={"E": jnp.asarray(m)})
    np.testing.assert_array_equal(np.asarray(got.dist["E"]["pck"]), want)
