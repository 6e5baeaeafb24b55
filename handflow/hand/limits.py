"""Anatomical joint limits of the 15 finger joints, as axes and angle ranges.

Each MANO finger joint k (1..15) has a flexion axis (curling towards the palm is a negative
rotation about it, the open hand's convention) and an abduction axis, both in the template
frame and derived from the template's joints; a twist about the bone is anatomically ~0.
`FINGER_LIMITS` / `THUMB_LIMITS` give (flexion min, flexion max, |abduction| max) in radians for
the MCP, PIP and DIP of the fingers and the CMC, MCP and IP of the thumb. Used both to draw
plausible poses (the synthetic data) and as a differentiable prior (`violation`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from handflow.hand.model import HandModel

FINGER_LIMITS = ((-0.2, 1.5, 0.3), (0.0, 1.7, 0.0), (0.0, 1.3, 0.0))
THUMB_LIMITS = ((-0.3, 0.7, 0.5), (-0.1, 0.9, 0.1), (0.0, 1.3, 0.0))
TWIST_MAX = 0.15  # radians: slack for the twist about the bone


def joint_limits() -> np.ndarray:
  """[15, 3]: (flexion min, flexion max, |abduction| max) per finger joint, MANO order."""
  return np.array([(THUMB_LIMITS if k >= 12 else FINGER_LIMITS)[k % 3] for k in range(15)])


def joint_axes(model: HandModel) -> np.ndarray:
  """[15, 3, 3]: per finger joint the (flexion, abduction, bone) unit axes, template frame."""
  j = np.asarray(model.j_template, np.float64)
  dorsal = np.array([0.0, 1.0, 0.0])
  axes = []
  for k in range(1, 16):
    child = k + 1 if k % 3 else k  # the distal joint uses its own bone direction
    bone = j[child] - j[k] if k % 3 else j[k] - j[k - 1]
    bone /= np.linalg.norm(bone)
    flex = np.cross(bone, dorsal)
    flex /= np.linalg.norm(flex)
    abd = np.cross(flex, bone)
    axes.append((flex, abd, np.cross(flex, abd)))
  return np.asarray(axes)


def violation(axis_angle, axes, limits=None):
  """How far local finger rotations lie outside the limits, radians >= 0.

  axis_angle [..., 15, 3] (MANO order, template frame), axes [15, 3, 3] from `joint_axes`;
  returns [..., 15, 3]: flexion, abduction and twist excess. The rotation vector's components on
  the joint's axes stand in for its Euler angles (exact for single-axis rotations).
  """
  limits = jnp.asarray(joint_limits() if limits is None else limits, axis_angle.dtype)
  comp = jnp.einsum("kij,...kj->...ki", jnp.asarray(axes, axis_angle.dtype), axis_angle)
  flex, abd, twist = -comp[..., 0], comp[..., 1], comp[..., 2]
  over = jnp.maximum(flex - limits[:, 1], 0.0) + jnp.maximum(limits[:, 0] - flex, 0.0)
  return jnp.stack(
    [
      over,
      jnp.maximum(jnp.abs(abd) - limits[:, 2], 0.0),
      jnp.maximum(jnp.abs(twist) - TWIST_MAX, 0.0),
    ],
    axis=-1,
  )
