"""Which methods exist: `config.method` -> a constructor taking the config.

Running them is `handflow.modes`' job; the training loop imports neither.
"""

from __future__ import annotations

from handflow.methods.cyclehand import CycleHand
from handflow.methods.handmim import HandMIM
from handflow.methods.handmim_pretrain import HandMIMPretrain
from handflow.methods.keypoints2d import Keypoints2D
from handflow.methods.ust import UST

METHODS = {
  "cyclehand": CycleHand,
  "handmim": HandMIM,
  "handmim_pretrain": HandMIMPretrain,
  "keypoints2d": lambda config: Keypoints2D(config.model.width, config.model.depth),
  "ust": UST,
}


def make(config):
  if config.method not in METHODS:
    raise ValueError(f"unknown method '{config.method}'; known: {sorted(METHODS)}")
  return METHODS[config.method](config)
