from handflow.experiments import noise_sweep


def _r(mpjpe):
  keys = noise_sweep.KEYS + ("teacher/hanco/MPJPE",)
  return {k: mpjpe + i for i, k in enumerate(keys)}


def test_table_lists_every_run_and_the_degradation():
  results = {
    "flow": {"clean": _r(20.0), "noisy": _r(26.0)},
    "deterministic": {"clean": _r(21.0), "noisy": _r(30.5)},
  }
  text = noise_sweep.table(results)
  assert text.count("\n| flow |") == 2 and text.count("\n| deterministic |") == 2
  assert "- flow: +6.0" in text and "- deterministic: +9.5" in text


def test_levels_only_change_detector_rates():
  from handflow.data import pseudo_labels

  for level in noise_sweep.LEVELS.values():
    pseudo_labels.DetectorConfig(**level)  # every key is a detector setting
  assert noise_sweep.LEVELS["noisy"]["outlier_rate"] > noise_sweep.LEVELS["clean"]["outlier_rate"]
