"""Evaluators on constructed predictions with known answers."""

import jax.numpy as jnp
import numpy as np
import pytest

from handflow.eval import evaluators, metrics


def test_chi3_radius_matches_the_chi_square_quantiles():
  # scipy.stats.chi2.ppf([0.5, 0.9], 3) = 2.365974, 6.251389
  assert evaluators.chi3_radius(0.5) ** 2 == pytest.approx(2.365974, abs=1e-5)
  assert evaluators.chi3_radius(0.9) ** 2 == pytest.approx(6.251389, abs=1e-5)


def _batch(b=64, t=2, v=2):
  return {"images": jnp.zeros((b, t, v, 4, 4, 3)), "mask": jnp.ones((b,))}


def test_3d_calibration_is_nominal_for_gaussian_errors_of_the_predicted_size():
  rng = np.random.default_rng(0)
  b, t = 64, 2
  u = rng.uniform(0.005, 0.03, (b, t, 21))  # predicted RMS error per joint
  xyz = rng.normal(size=(b, t, 21, 3))
  err = rng.normal(size=(b, t, 21, 3)) * (u / np.sqrt(3))[..., None]
  pred = {"joints": jnp.asarray(xyz + err), "uncertainty": jnp.asarray(u)}
  batch = dict(_batch(b, t), xyz=jnp.asarray(xyz))
  s = evaluators.Calibration((0.5, 0.9)).stats(None, None, None, pred, batch)
  out = metrics.finalize(s)
  assert out["calib/3d_50"] == pytest.approx(0.5, abs=0.03)
  assert out["calib/3d_90"] == pytest.approx(0.9, abs=0.02)
  # Twice too confident: far below nominal.
  pred["uncertainty"] = jnp.asarray(u / 2)
  out = metrics.finalize(evaluators.Calibration((0.5,)).stats(None, None, None, pred, batch))
  assert out["calib/3d_50"] < 0.15


def _predict(params, extra, batch):
  """A method's predict whose outputs are the batch's `pred_joints` and `pred_u`."""
  del params, extra
  return {"joints": batch["pred_joints"], "uncertainty": batch["pred_u"]}


def test_conformal_radii_chosen_on_one_split_cover_another():
  import jax

  from handflow import sharding

  rng = np.random.default_rng(1)
  mesh = sharding.make_mesh({"data": -1})

  def batches(n):  # uncertainty 3x too small: the Gaussian radius under-covers
    for _ in range(n):
      b, t = 8, 2
      u = rng.uniform(0.005, 0.03, (b, t, 21)).astype(np.float32)
      xyz = rng.normal(size=(b, t, 21, 3)).astype(np.float32)
      err = rng.normal(size=(b, t, 21, 3)) * (u / np.sqrt(3))[..., None]
      yield {"xyz": xyz, "pred_joints": (xyz + err).astype(np.float32), "pred_u": u / 3,
             "mask": np.r_[np.ones(b - 1), 0.0].astype(np.float32)}  # fmt: skip

  fn = jax.jit(_predict)
  r_val = evaluators.ratios(fn, None, None, batches(8), mesh)
  assert r_val.shape == (8 * 7 * 2 * 21,)  # padding dropped
  scales = evaluators.conformal_scales(r_val, (0.5, 0.9))
  # The true multiples: 3 x the Gaussian radii.
  for lv, q in scales.items():
    assert q == pytest.approx(3 * evaluators.chi3_radius(lv) / np.sqrt(3), rel=0.06)
  cover = evaluators.coverage(evaluators.ratios(fn, None, None, batches(8), mesh), scales)
  assert cover[0.5] == pytest.approx(0.5, abs=0.04)
  assert cover[0.9] == pytest.approx(0.9, abs=0.03)


def test_conformal_scale_is_the_finite_sample_order_statistic():
  r = np.arange(1.0, 10.0)  # n = 9
  s = evaluators.conformal_scales(r[::-1], (0.5, 0.9, 0.99))
  assert s == {0.5: 5.0, 0.9: 9.0, 0.99: 9.0}  # ceil(10 * level)-th smallest, capped at n
  assert evaluators.coverage(r, s) == {0.5: 5 / 9, 0.9: 1.0, 0.99: 1.0}
  with pytest.raises(ValueError, match="no calibration"):
    evaluators.conformal_scales(np.zeros(0), (0.5,))


def test_labels_evaluator_pools_over_labels():
  b, t, v = 2, 1, 2
  uv = np.zeros((b, t, v, 21, 2))
  uv[..., 0] = np.arange(21) * 5.0  # a hand 100 px across
  uv_pl = uv.copy()
  uv_pl[0, 0, 0, :4] += 30.0  # 4 wrong labels in clip 0 (42 px off > 10% of ~100 px)
  conf = np.ones((b, t, v, 21))
  weight = conf.copy()
  weight[0, 0, 0, :3] = 0.1  # three of them down-weighted
  weight[1, 0, 1, :2] = 0.1  # and two right labels
  batch = {
    **_batch(b, t, v),
    "uv": jnp.asarray(uv),
    "uv_pl": jnp.asarray(uv_pl),
    "conf": jnp.asarray(conf),
  }
  pred = {"label_weight": jnp.asarray(weight)}
  out = metrics.finalize(evaluators.Labels().stats(None, None, None, pred, batch))
  assert out["labels/wrong_downweighted"] == pytest.approx(3 / 4)
  assert out["labels/right_downweighted"] == pytest.approx(2 / (4 * 21 - 4))


def test_teacher_row_holds_the_frames_it_triangulates_whole_and_the_model_sits_beside_it():
  from handflow.geometry import cameras

  rng = np.random.default_rng(2)
  b, t, v = 2, 1, 2
  xyz = rng.normal(scale=0.03, size=(b, t, 21, 3)) + np.array([0.0, 0.0, 0.5])
  K = np.array([[200.0, 0, 64], [0, 200.0, 64], [0, 0, 1]])
  eyes = np.array([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]])
  T = np.asarray(cameras.look_at(eyes, np.array([0.0, 0.0, 0.5])))  # [v, 4, 4]
  T = np.broadcast_to(T, (b, t, v, 4, 4))
  Ks = np.broadcast_to(K, (b, t, v, 3, 3))
  uv = np.asarray(cameras.world_to_image(Ks, T, np.repeat(xyz[:, :, None], v, 2))[0])
  conf = np.ones((b, t, v, 21))
  conf[1, 0, 1, :5] = 0.0  # frame 1: five joints seen by one view only
  pred_j = xyz.copy()
  pred_j[0, 0, 5, 0] += 0.01  # the model: 1 cm off on one joint in frame 0, 5 cm in frame 1
  pred_j[1, 0, 5, 0] += 0.05
  batch = {
    **_batch(b, t, v),
    "xyz": jnp.asarray(xyz, jnp.float32),
    "uv_pl": jnp.asarray(uv, jnp.float32),
    "conf": jnp.asarray(conf, jnp.float32),
    "K": jnp.asarray(Ks, jnp.float32),
    "T_cam_world": jnp.asarray(T, jnp.float32),
  }
  ev = evaluators.Pose3D(protocols=("rootrel",), rows=(("", "joints", ""),), teacher=True)
  out = metrics.finalize(ev.stats(None, None, None, {"joints": jnp.asarray(pred_j)}, batch))
  assert out["teacher/full_hands"] == pytest.approx(0.5)
  assert out["teacher/rootrel/MPJPE"] == pytest.approx(0.0, abs=0.05)  # exact labels, frame 0
  assert out["teacher_frames/rootrel/MPJPE"] == pytest.approx(10 / 21, rel=1e-3)  # frame 0
  assert out["rootrel/MPJPE"] == pytest.approx((10 + 50) / 42, rel=1e-3)  # both frames
  assert out["versus/no_teacher/model"] == pytest.approx(0.0, abs=1e-3)  # joints 0-4, frame 1


def test_calibration_skips_2d_regions_of_a_head_without_samples():
  class OnePointHead:  # laplace / l1: the prediction carries no hypothesis samples
    def uv_log_density(self, params, extra, batch, uv):
      raise AssertionError("no density without samples")

  b, t, v = 4, 2, 2
  pred = {
    "joints": jnp.zeros((b, t, 21, 3)),
    "uncertainty": jnp.full((b, t, 21), 0.01),
    "uv_log_lik": jnp.zeros((b, t, v, 21, 0)),
  }
  batch = dict(_batch(b, t, v), xyz=jnp.zeros((b, t, 21, 3)))
  s = evaluators.Calibration((0.5,)).stats(OnePointHead(), None, None, pred, batch)
  assert metrics.finalize(s) == {"calib/3d_50": 1.0}
