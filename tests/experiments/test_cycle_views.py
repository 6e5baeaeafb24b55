import pytest

from configs import cyclehand
from handflow.experiments import cycle_views


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


@pytest.mark.parametrize("arm", list(cycle_views.ARMS))
def test_arms_switch_off_only_their_terms(arm):
  base = cyclehand.get_config("tiny")
  config = cycle_views.arm_config(base, arm, seed=3, cone=45.0)
  assert config.seed == 3 and config.data.labelled_views == 45.0 and config.eval_every == 0
  for term in ("photo", "cycle", "contrastive", "limits", "penetration", "sup3d"):
    off = term in cycle_views.ARMS[arm]
    assert (config.loss[term] == 0.0) == off, term
