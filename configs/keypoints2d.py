"""The 2D keypoint regressor baseline on pseudo-labels (handflow/methods/keypoints2d.py).

  python -m handflow.main --config=configs/keypoints2d.py --workdir=/tmp/handflow/kp2d
  python -m handflow.main --config=configs/keypoints2d.py:tiny --workdir=/tmp/handflow/kp2d_tiny

Same data, variants and arg keys as configs/ust.py; only the method and its schedule differ.
"""

from configs import ust


def get_config(arg=None):
  c = ust.get_config(arg)
  c.method = "keypoints2d"
  if c.variant == "default":
    c.num_steps, c.eval_every, c.checkpoint.every = 300, 100, 100
    c.optim.learning_rate, c.optim.warmup_steps = 2e-3, 20
  return c
