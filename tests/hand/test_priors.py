"""Hand priors: known answers and invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import hand
from handflow.hand import limits, priors, rotations


def _clip(b=2, t=5, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, 21, 3)), jnp.float32)


def test_acceleration_is_zero_for_constant_velocity_and_exact_otherwise():
  x0, v = _clip(t=1), _clip(t=1, seed=1)
  steps = jnp.arange(6.0)[None, :, None, None]
  linear = x0 + steps * v
  np.testing.assert_allclose(priors.acceleration(linear), 0.0, atol=1e-5)
  quad = x0 + 0.5 * steps**2 * v  # second difference = v in every frame
  want = jnp.mean(jnp.sum(v**2, -1), -1)
  np.testing.assert_allclose(priors.acceleration(quad), jnp.broadcast_to(want, (2, 4)), rtol=1e-4)
  assert priors.acceleration(_clip(t=2)).shape == (2, 0)


def test_bone_variance_ignores_rigid_motion_and_sees_stretching():
  x = _clip(t=1)
  R = rotations.axis_angle_to_matrix(jnp.asarray([[0.1, 0.5, -0.3], [1.0, 0.0, 0.2]]))
  moved = jnp.concatenate([x, jnp.einsum("ij,btkj->btki", R[0], x) + 3.0], 1)
  np.testing.assert_allclose(priors.bone_variance(moved), 0.0, atol=1e-6)
  stretched = jnp.concatenate([x, 2.0 * x], 1)
  assert float(priors.bone_variance(stretched).min()) > 0
  g = jax.grad(lambda y: priors.bone_variance(y).sum())(jnp.zeros((1, 2, 21, 3)))
  assert bool(jnp.all(jnp.isfinite(g)))  # padding (all zero) keeps gradients finite


def test_shape_pose_and_limit_priors_vanish_at_the_flat_mean_hand():
  model = hand.load("open", "right")
  axes = limits.joint_axes(model)
  eye = jnp.broadcast_to(jnp.eye(3), (3, 15, 3, 3))
  assert float(priors.limits(eye, axes).max()) == 0.0
  assert float(priors.shape(jnp.zeros((3, 5))).max()) == 0.0
  assert float(priors.pose(jnp.zeros((3, 15, 6))).max()) == 0.0
  back = jnp.zeros((15, 3)).at[3].set(1.0 * axes[3, 0])  # MCP hyperextended by 1 rad
  R = rotations.axis_angle_to_matrix(back)
  assert float(priors.limits(R, axes)) == pytest.approx(0.8**2 / 45, rel=1e-4)
