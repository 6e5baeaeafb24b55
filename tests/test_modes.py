"""The entry's modes: training evaluates on validation only; the report scores test once."""

import json

import numpy as np
import pytest

from configs import keypoints2d
from handflow import modes, train
from handflow.data import pipeline
from tests.data.test_synthetic_hands import tiny  # noqa: F401 - the shared tiny dataset


@pytest.fixture
def reads(monkeypatch):
  """[(phase, split, train)] of every pipeline read; phase "train" while the loop runs."""
  log, phase = [], ["setup"]
  batches, loop = pipeline.batches, train.train_and_evaluate

  def recording(config, split, *, train, **kw):
    log.append((phase[0], split, train))
    return batches(config, split, train=train, **kw)

  def in_loop(*a, **kw):
    phase[0] = "train"
    try:
      return loop(*a, **kw)
    finally:
      phase[0] = "report"

  monkeypatch.setattr(pipeline, "batches", recording)
  monkeypatch.setattr(train, "train_and_evaluate", in_loop)
  return log


def test_each_phase_reads_its_split(tiny, tmp_path, reads):  # noqa: F811
  config = keypoints2d.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  config.num_steps, config.eval_every, config.tensorboard = 4, 2, False
  results = modes.run("train", config, tmp_path)
  in_loop = {(split, tr) for phase, split, tr in reads if phase == "train"}
  assert in_loop == {("train", True), ("validation", False)}  # never test while training
  after = [(split, tr) for phase, split, tr in reads if phase == "report"]
  assert after.count(("test", False)) == 1  # one pass: trained and untrained scored together
  assert ("validation", False) not in after
  rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "eval/uv_err_px" in r] == [2, 4]
  assert np.isfinite(results["trained"]["uv_err_px"]) and "untrained" in results
  text = (tmp_path / "results.md").read_text()
  assert "test split, scored once" in text and "pseudo-labels (teacher)" in text
  # eval re-reads the checkpoint's params item and scores test (only test) once again.
  reads.clear()
  again = modes.run("eval", config, tmp_path)
  assert {split for _, split, _ in reads} == {"test"}
  assert again["trained"] == results["trained"]


def test_missing_validation_split_is_named(tiny, tmp_path):  # noqa: F811
  config = keypoints2d.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  config.data.eval_split = "val"
  with pytest.raises(pipeline.DataError, match="no split 'val'.*eval_split"):
    modes.run("train", config, tmp_path)
