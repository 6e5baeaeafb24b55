import numpy as np

from handflow.data import pseudo_labels
from handflow.experiments import noise_sweep


def _r(mpjpe):
  return {k: mpjpe + i for i, k in enumerate(noise_sweep.KEYS)}


def test_heads_table_pairs_seeds_and_reports_the_degradation_difference():
  results = {
    "flow": {"clean": {0: _r(20.0), 1: _r(22.0)}, "hard": {0: _r(26.0), 1: _r(27.0)}},
    "l1": {"clean": {0: _r(21.0), 1: _r(20.0)}, "hard": {0: _r(30.0), 1: _r(31.0)}},
  }
  text = noise_sweep.heads_table(results, "10 steps")
  assert text.startswith("Budget per cell: 10 steps.")
  assert text.count("\n| flow |") == 3  # 2 levels + its degradation
  assert text.count("\n| l1 |") == 4  # and the difference from the flow
  # Paired degradations: flow +6, +5 (mean 5.5); l1 +9, +11 (mean 10); difference -3, -6.
  assert "| flow | 5.5 [5.0, 6.0] |" in text and "| l1 | 10.0 [9.0, 11.0] |" in text
  assert "| l1 | -4.5 [-6.0, -3.0] |" in text


def test_bootstrap_ci_brackets_the_mean():
  m, lo, hi = noise_sweep.bootstrap_ci(np.arange(10.0))
  assert lo < m == 4.5 < hi and hi - lo < 5
  assert noise_sweep.bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)


def test_levels_are_detector_presets_or_the_real_detector():
  for name in noise_sweep.LEVELS:
    if name != "real":
      pseudo_labels.preset(name)
  assert pseudo_labels.preset("hard").outlier_rate > pseudo_labels.preset("clean").outlier_rate
