import numpy as np

from configs import keypoints2d
from handflow import sharding, train, writers
from handflow.data import pipeline
from handflow.eval import evaluators
from handflow.methods.keypoints2d import Keypoints2D
from tests.data.test_synthetic_hands import tiny  # noqa: F401 - the shared tiny dataset


def test_trains_on_the_pipeline_and_evaluates(tiny, tmp_path):  # noqa: F811
  config = keypoints2d.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  config.num_steps, config.batch_size, config.log_every, config.tensorboard = 40, 8, 4, False
  config.optim.learning_rate, config.optim.warmup_steps = 3e-3, 2
  config.checkpoint.every = 100
  method = Keypoints2D(width=8, depth=2)
  mesh = sharding.make_mesh()
  stats_fn = evaluators.make_stats_fn(method, evaluators.from_config(config), mesh)
  val = lambda: pipeline.batches(config, "validation", train=False)
  train.train_and_evaluate(
    config,
    tmp_path,
    method,
    lambda start: pipeline.batches(config, "train", train=True, start_step=start),
    lambda params, extra: evaluators.evaluate(stats_fn, params, extra, val(), mesh),
  )
  rows = writers.read_jsonl(tmp_path / "metrics.jsonl")
  losses = [r["loss"] for r in rows if "loss" in r]
  assert np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3])
  final = [r for r in rows if "eval/uv_err_px" in r][-1]
  assert 0 < final["eval/uv_err_px"] < 32 and 0 < final["eval/teacher/uv_err_px"] < 32
