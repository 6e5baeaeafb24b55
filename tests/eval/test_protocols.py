import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handflow.eval import metrics, protocols
from handflow.geometry import cameras
from tests.geometry.test_alignment import official_align_w_scale


def _data(n=10, seed=0, nv=778):
  rng = np.random.default_rng(seed)
  gt_j = rng.normal(0, 0.04, (n, 21, 3)) + [0.0, 0.0, 0.5]
  gt_v = rng.normal(0, 0.04, (n, nv, 3)) + [0.0, 0.0, 0.5]
  pred_j = gt_j + rng.normal(0, 0.005, gt_j.shape)
  pred_v = gt_v + rng.normal(0, 0.005, gt_v.shape)
  return pred_j, gt_j, pred_v, gt_v


def test_freihand_matches_a_direct_numpy_loop():
  pred_j, gt_j, pred_v, gt_v = _data()
  out = protocols.evaluate("freihand", pred_j, gt_j, pred_v, gt_v, batch_size=4)
  mpjpe = np.mean(np.linalg.norm(pred_j - gt_j, axis=-1)) * 1000
  pa = (
    np.mean(
      [
        np.linalg.norm(official_align_w_scale(g, p) - g, axis=-1).mean()
        for p, g in zip(pred_j, gt_j, strict=True)
      ]
    )
    * 1000
  )
  pav = (
    np.mean(
      [
        np.linalg.norm(official_align_w_scale(g, p) - g, axis=-1).mean()
        for p, g in zip(pred_v, gt_v, strict=True)
      ]
    )
    * 1000
  )
  assert out["MPJPE"] == pytest.approx(mpjpe, rel=1e-6)
  assert out["PA-MPJPE"] == pytest.approx(pa, rel=1e-6)
  assert out["PA-MPVPE"] == pytest.approx(pav, rel=1e-6)
  assert out["AUC_J"] == out["AUC_PA-MPJPE"] and 0 < out["F@5"] <= 1


def test_pa_metrics_invariant_and_zero_for_perfect():
  _, gt_j, _, gt_v = _data(n=4)
  r = Rotation.random(random_state=1).as_matrix()
  moved_j = 1.3 * gt_j @ r.T + [0.1, 0.2, 0.3]
  moved_v = 1.3 * gt_v @ r.T + [0.1, 0.2, 0.3]
  out = protocols.evaluate("freihand", moved_j, gt_j, moved_v, gt_v)
  assert out["PA-MPJPE"] < 1e-6 and out["PA-MPVPE"] < 1e-6
  assert out["F@5"] == pytest.approx(1.0, abs=1e-12)
  assert out["MPJPE"] > 10.0


def test_hanco_scale_root_protocol():
  _, gt_j, _, gt_v = _data(n=3)
  pred_j = 0.8 * (gt_j - gt_j[:, 9:10]) + [0.3, 0.0, 0.0]
  pred_v = 0.8 * (gt_v - gt_j[:, 9:10]) + [0.3, 0.0, 0.0]
  out = protocols.evaluate("hanco", pred_j, gt_j, pred_v, gt_v)
  assert out["MPJPE"] < 1e-6 and out["MPVPE"] < 1e-6


def test_dexycb_skips_invalid_ground_truth():
  pred_j, gt_j, _, _ = _data(n=6)
  gt_bad = gt_j.copy()
  gt_bad[2] = -1.0
  out = protocols.evaluate("dexycb", pred_j, gt_bad)
  keep = [0, 1, 3, 4, 5]
  want = np.mean(np.linalg.norm(pred_j[keep] - gt_j[keep], axis=-1)) * 1000
  assert out["MPJPE"] == pytest.approx(want, rel=1e-6)
  assert {"MPJPE", "RR-MPJPE", "PA-MPJPE", "AUC_RR-MPJPE"} <= set(out)


def test_bad_inputs_are_named():
  pred_j, gt_j, pred_v, gt_v = _data(n=5)
  with pytest.raises(ValueError, match="look like millimetres"):
    protocols.evaluate("freihand", pred_j * 1000, gt_j, pred_v * 1000, gt_v)
  with pytest.raises(ValueError, match="has 4 samples, the ground truth 5"):
    protocols.evaluate("freihand", pred_j[:4], gt_j, pred_v[:4], gt_v)
  with pytest.raises(ValueError, match=r"\[samples, 21, 3\], got \(5, 16, 3\)"):
    protocols.evaluate("rootrel", pred_j[:, :16], gt_j)
  nan = pred_j.copy()
  nan[3, 2, 1] = np.nan
  with pytest.raises(ValueError, match=r"NaN or inf joints in 1 samples, first \[3\]"):
    protocols.evaluate("rootrel", nan, gt_j)
  with pytest.raises(ValueError, match="scores meshes, but the predictions has no vertices"):
    protocols.evaluate("freihand", pred_j, gt_j, None, gt_v)
  with pytest.raises(ValueError, match="OpenCV camera frame"):
    protocols.evaluate(
      "ho3d_v2", pred_j, cameras.opencv_to_opengl(gt_j), pred_v, cameras.opencv_to_opengl(gt_v)
    )
  with pytest.raises(ValueError, match="unknown evaluation protocol"):
    protocols.get("nope")


def test_ground_truth_is_checked_like_predictions():
  """NaN ground truth would give NaN means and a changed AUC; one sample in millimetres among
  metres would add metres to the mean: both refused, by sample."""
  pred_j, gt_j, pred_v, gt_v = _data(n=5)
  bad = gt_j.copy()
  bad[2, 0, 0] = np.nan
  nan_joints = r"ground truth: NaN or inf joints in 1 samples, first \[2\]"
  with pytest.raises(ValueError, match=nan_joints):
    protocols.evaluate("freihand", pred_j, bad, pred_v, gt_v)
  bad_v = gt_v.copy()
  bad_v[4, 7, 2] = np.inf
  with pytest.raises(ValueError, match=r"ground truth: NaN/inf vertices in 1 samples, first \[4\]"):
    protocols.evaluate("freihand", pred_j, gt_j, pred_v, bad_v)
  mixed = pred_j.copy()
  mixed[1] *= 1000.0
  with pytest.raises(ValueError, match=r"1 samples are over 100x the ground truth's size \(first"):
    protocols.evaluate("rootrel", mixed, gt_j)


def test_a_nan_error_is_never_a_pck_hit():
  err = jnp.array([[jnp.nan, 0.0, 1.0]])
  pck = metrics._pck_counts(err, jnp.ones_like(err), jnp.asarray(metrics.THRESHOLDS_M))
  assert float(pck[0, -1]) == 0.0 and float(pck[1, 0]) == 1.0 and float(pck[2, -1]) == 0.0


def test_every_preset_names_a_hand_convention_with_its_order():
  from handflow.hand import conventions

  for p in protocols.PRESETS.values():
    c = conventions.get(p.convention)
    assert c.order == p.order, p.name
