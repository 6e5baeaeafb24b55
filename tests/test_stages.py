"""Runs of several stages: overrides, stage references, reuse of finished stages."""

import json

import ml_collections
import numpy as np
import pytest

from handflow import stages


def _config():
  c = ml_collections.ConfigDict(
    {"method": "b", "num_steps": 3, "loss": {"x": 1.0, "y": 2.0},
     "init_from": {"workdir": "", "tree": "params"}}
  )  # fmt: skip
  c.stages = ml_collections.ConfigDict(
    {
      "order": ("pre", "fine"),
      "compare": ("fine",),
      "pre": {"method": "a", "loss": {"x": 0.0}},
      "fine": {"init_from": {"workdir": "stage:pre"}},
    }
  )
  return c


def test_overrides_merge_key_by_key_and_references_resolve(tmp_path):
  c = _config()
  pre = stages.stage_config(c, "pre", tmp_path)
  assert pre.method == "a" and pre.loss.x == 0.0 and pre.loss.y == 2.0 and "stages" not in pre
  fine = stages.stage_config(c, "fine", tmp_path)
  assert fine.method == "b" and fine.init_from.workdir == str(tmp_path / "pre")
  assert fine.init_from.tree == "params"


def test_bad_stage_definitions_name_the_key(tmp_path):
  c = _config()
  c.stages.pre.loss.z = 1.0
  with pytest.raises(ValueError, match="'loss.z' is not a key"):
    stages.stage_config(c, "pre", tmp_path)
  c = _config()
  c.stages.order = ("fine", "pre")  # refers to a later stage
  with pytest.raises(ValueError, match="not an earlier stage"):
    stages.stage_config(c, "fine", tmp_path)


def test_a_stage_is_finished_only_with_its_last_checkpoint_and_results(tmp_path):
  from handflow import checkpoint

  c = stages.stage_config(_config(), "pre", tmp_path)
  assert not stages.finished(c, tmp_path)
  (tmp_path / "results.json").write_text("{}")
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  state = {"w": np.zeros(2)}
  ckpt.save(2, state, state, force=True)
  ckpt.wait()
  assert not stages.finished(c, tmp_path)  # step 2 of 3
  ckpt.save(3, state, state, force=True)
  ckpt.wait()
  assert stages.finished(c, tmp_path)


def test_the_comparison_scores_the_stages_and_their_constant(tmp_path):
  config = ml_collections.ConfigDict({"method": "m"})
  const = {"freihand/PA-MPJPE": 14.31}
  results = {
    "finetune": {"trained": {"freihand/PA-MPJPE": 15.0, "note": "x"}, "mean_hand": const},
    "scratch": {"trained": {"freihand/PA-MPJPE": 16.0}, "mean_hand": dict(const)},
  }
  stages.write_comparison(config, tmp_path, results)
  md = (tmp_path / "results.md").read_text()
  assert "| metric | finetune | scratch | mean hand (constant) |" in md
  assert "| freihand/PA-MPJPE | 15 | 16 | 14.31 |" in md
  assert "Per-stage reports: finetune/results.md, scratch/results.md" in md
  assert sorted(json.loads((tmp_path / "results.json").read_text())) == ["finetune", "scratch"]
  results["scratch"]["mean_hand"] = {"freihand/PA-MPJPE": 15.5}  # other labels: one each
  stages.write_comparison(config, tmp_path, results)
  md = (tmp_path / "results.md").read_text()
  assert "| 15 | 16 | 14.31 | 15.5 |" in md and "mean hand of scratch's labels" in md
