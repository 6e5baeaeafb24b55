"""Which methods exist, and how `handflow.main` runs them (train with periodic evaluation)."""

from __future__ import annotations

import jax

from handflow import train
from handflow.data import pipeline
from handflow.methods.keypoints2d import Keypoints2D


def _keypoints2d(config):
  return Keypoints2D(width=config.model.backbone_width)


METHODS = {"keypoints2d": _keypoints2d}


def run(mode: str, config, workdir):
  """Trains (mode "train") the config's method on its dataset; returns the final state."""
  if mode != "train":
    raise ValueError(f"mode '{mode}' is not available yet for method '{config.method}'")
  method = METHODS[config.method](config)
  host = dict(process_index=jax.process_index(), process_count=jax.process_count())
  return train.train_and_evaluate(
    config,
    workdir,
    method,
    lambda start: pipeline.batches(config, "train", train=True, start_step=start, **host),
    lambda: pipeline.batches(config, "test", train=False, **host),
  )
