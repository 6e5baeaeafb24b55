import numpy as np
import pytest

from handflow.data import label_stats, pseudo_labels


def test_statistics_known_answers():
  uv = np.zeros((2, 21, 2))
  uv[..., 0] = np.arange(21) * 3.0
  uv[:, 5, 1], uv[:, 17, 1] = 10.0, -10.0  # a palm with a definite winding
  pl = uv.copy()
  pl[0, :4] += [30.0, 0.0]  # 4 keypoints 30 px off in view 0
  conf = np.ones((2, 21))
  conf[1] = 0.0  # view 1: no detection
  st = label_stats.statistics(pl, conf, uv)
  assert st["detected"] == 0.5
  assert st["frac_over_20px"] == pytest.approx(4 / 21)
  assert st["err_median_px"] == 0.0 and st["err_mean_px"] == pytest.approx(4 * 30 / 21)
  assert st["wrong_handedness"] == 0.0
  mirrored = pseudo_labels._mirror(uv, np.ones(2, bool))
  assert label_stats.statistics(mirrored, np.ones((2, 21)), uv)["wrong_handedness"] == 1.0


def test_simulate_split_uses_the_given_clip_keys():
  rng = np.random.default_rng(0)
  ex = {
    "uv": rng.uniform(0, 100, (2, 3, 21, 2)),
    "visible": np.ones((2, 3, 21), bool),
    "T_cam_world": np.broadcast_to(np.eye(4), (2, 3, 4, 4)),
    "clip_id": 7,
  }
  det = pseudo_labels.preset("default")
  pl, _, gt = label_stats.simulate_split([ex], det, lambda cid: (0, 3, int(cid)))
  want = pseudo_labels.simulate_clip(ex["uv"], ex["visible"], ex["T_cam_world"], det, (0, 3, 7))
  np.testing.assert_array_equal(pl[0], want.uv)
  np.testing.assert_array_equal(gt[0], ex["uv"])
