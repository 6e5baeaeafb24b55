"""The 2D keypoint regressor baseline on pseudo-labels (handflow/methods/keypoints2d.py).

  python -m handflow.main --config=configs/keypoints2d.py --workdir=/tmp/handflow/kp2d
  python -m handflow.main --config=configs/keypoints2d.py:tiny --workdir=/tmp/handflow/kp2d_tiny

Variants and shared keys: configs/common.py. Reports the 2D error against the ground truth and
the pseudo-labels' own (`uv2d` evaluator).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  c, arg = common.base(arg)
  c.method = "keypoints2d"
  c.model = ml_collections.ConfigDict({"width": 32, "depth": 4})
  c.evaluators = ml_collections.ConfigDict({"uv2d": {"rows": (("", "uv"),), "teacher": True}})
  if arg.variant == "default":
    c.num_steps, c.eval_every, c.checkpoint.every = 300, 100, 100
    c.optim.learning_rate, c.optim.warmup_steps = 2e-3, 20
  elif arg.variant == "tiny":
    c.model.width = 8
  return c
