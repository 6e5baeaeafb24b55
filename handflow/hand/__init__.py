"""The hand model: MANO kernel (pure jnp), model files, conventions and rotations."""

from handflow.hand import conventions, kernel, rotations
from handflow.hand.kernel import HandOutput, forward, lbs, pose_to_rotmats, template
from handflow.hand.loader import load
from handflow.hand.model import HandModel, ModelFileError

__all__ = [
  "HandModel",
  "HandOutput",
  "ModelFileError",
  "conventions",
  "forward",
  "kernel",
  "lbs",
  "load",
  "pose_to_rotmats",
  "rotations",
  "template",
]
