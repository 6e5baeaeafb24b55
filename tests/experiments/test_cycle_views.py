import numpy as np
import pytest

from configs import cyclehand
from handflow.experiments import cells, cycle_views


def _r(base):
  bins = ("0-45", "45-90", "90-135", "135-180")
  out = {f"view/{b}/PA-MPJPE": base + i for i, b in enumerate(bins)}
  out["freihand/PA-MPJPE"] = base + 10
  return out


def test_table_pairs_arms_with_supervised_by_seed():
  results = {
    "supervised": {0: _r(20.0), 1: _r(22.0)},
    "cycle": {0: _r(18.0), 1: _r(21.0)},
  }
  text = cycle_views.table(results, "5 steps")
  assert text.startswith("Budget per cell: 5 steps.")
  assert "| supervised | 2 | 21.0 [20.0, 22.0] |" in text
  # Paired differences: -2 and -1 in every bin.
  assert "| cycle | -1.5 [-2.0, -1.0] | -1.5 [-2.0, -1.0] |" in text
  const = {"view/0-45/PA-MPJPE": 14.0, "view/45-90/PA-MPJPE": 15.0, "freihand/PA-MPJPE": 14.5}
  text = cycle_views.table(results, "5 steps", const)
  assert f"| {cells.CONSTANT} | – | 14.0 | 15.0 | – | – | 14.5 |" in text


def test_the_constant_per_bin_averages_to_the_overall_one(tmp_path):
  """`cells.constant` on real (tiny) data: PA-MPJPE is a mean over images, so the overall
  constant is the bins' constants weighted by their shares of the test images."""
  config = cycle_views.arm_config(cyclehand.get_config("tiny"), "supervised", 0, 0.0)
  config.data.data_dir = str(tmp_path / "tfds")
  from handflow.data import pipeline, prepare
  from handflow.geometry import viewpoint
  from handflow.methods import single_image

  prepare.prepare(config)
  out = cells.constant(config, bins=True)
  angle = np.concatenate([
    np.asarray(viewpoint.palm_angle(single_image.gt_cam(b)))[np.asarray(b["mask"]).reshape(-1) > 0]
    for b in pipeline.batches(config, "test", train=False)
  ])  # fmt: skip
  shares = np.asarray(viewpoint.bin_masks(angle)).mean(-1)
  total = sum(
    share * out[f"view/{name}/PA-MPJPE"]
    for name, share in zip(viewpoint.bin_names(), shares, strict=True)
    if share > 0
  )
  assert 0 < out["freihand/PA-MPJPE"] < 100
  np.testing.assert_allclose(total, out["freihand/PA-MPJPE"], rtol=1e-5)
  config.data.labelled_fraction = 0.0  # reads no labels: no constant
  assert cells.constant(config) == {}


@pytest.mark.parametrize("arm", list(cycle_views.ARMS))
def test_arms_switch_off_only_their_terms(arm):
  base = cyclehand.get_config("tiny")
  config = cycle_views.arm_config(base, arm, seed=3, cone=45.0)
  assert config.seed == 3 and config.data.labelled_views == 45.0 and config.eval_every == 0
  for term in ("photo", "cycle", "contrastive", "limits", "penetration", "sup3d"):
    off = term in cycle_views.ARMS[arm]
    assert (config.loss[term] == 0.0) == off, term
