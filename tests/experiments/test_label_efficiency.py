import pytest

from configs import handmim
from handflow.experiments import cells
from handflow.experiments import label_efficiency as le


def _r(base):
  return {"freihand/PA-MPJPE": base, "freihand/PA-MPVPE": base - 1, "freihand/F@5": 0.2,
          "freihand/F@15": 0.8}  # fmt: skip


def test_table_pairs_arms_with_scratch_by_seed_and_plots():
  results = {
    "scratch": {"0.1": {0: _r(20.0), 1: _r(22.0)}, "1": {0: _r(10.0), 1: _r(12.0)}},
    "handmim": {"0.1": {0: _r(18.0), 1: _r(21.0)}, "1": {0: _r(10.0), 1: _r(11.0)}},
  }
  mean_hand = {"0.1": {"freihand/PA-MPJPE": 14.31}, "1": {"freihand/PA-MPJPE": 14.0}}
  text = le.table(results, "5 steps", mean_hand)
  assert text.startswith("Budget: 5 steps.")
  # The constant, in the tables of the metrics it has (PA-MPJPE), not in the others.
  assert text.count(f"| {cells.CONSTANT} | – | 14.3 | 14.0 |") == 1
  assert "| scratch | 2 | 21.0 [20.0, 22.0] | 11.0 [10.0, 12.0] |" in text
  # Paired differences: (-2, -1) at 10%, (0, -1) at 100%.
  assert "| handmim | -1.5 [-2.0, -1.0] | -0.5 [-1.0, 0.0] |" in text
  assert le.plot_png(results)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("arm", [a for a, off in le.ARMS.items() if off is not None])
def test_pretraining_arms_switch_off_only_their_terms(arm):
  base = handmim.get_config("tiny")
  c = le.pretrain_config(base, arm, seed=3)
  assert c.method == "handmim_pretrain" and c.seed == 3 and c.eval_every == 0
  for term in ("cls", "patch", "keypoints", "pixels"):
    assert (c.loss[term] == 0.0) == (term in le.ARMS[arm]), term


def test_fine_tuning_cells_share_everything_but_the_initialisation():
  base = handmim.get_config("tiny")
  a = le.finetune_config(base, 0.01, 1, "/x/pretrain_handmim_s1")
  b = le.finetune_config(base, 0.01, 1, "")
  assert a.method == b.method == "handmim" and a.data.labelled_fraction == 0.01
  assert a.init_from.workdir == "/x/pretrain_handmim_s1" and b.init_from.workdir == ""
  a.init_from.workdir = ""
  assert a.to_dict() == b.to_dict()


def test_the_constant_is_scored_per_fraction_on_its_own_labels(monkeypatch):
  """`constants` asks `cells.constant` (tested on real data in test_cycle_views.py) once per
  fraction, with that fraction's fine-tuning config."""
  seen = []
  monkeypatch.setattr(
    cells, "constant", lambda c: seen.append(c) or {"x": c.data.labelled_fraction}
  )
  out = le.constants(handmim.get_config("tiny"), [0.01, 1.0])
  assert out == {"0.01": {"x": 0.01}, "1": {"x": 1.0}}
  assert [c.method for c in seen] == ["handmim", "handmim"]
