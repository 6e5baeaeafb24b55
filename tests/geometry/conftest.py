import jax.numpy as jnp
import numpy as np
import pytest

from handflow.geometry import cameras


def sphere_rig(num_views=8, radius=0.6, f=500.0, size=224, seed=0):
  """K [v,3,3], T_cam_world [v,4,4]: cameras on a sphere around the origin, HanCo-like."""
  rng = np.random.default_rng(seed)
  dirs = rng.normal(size=(num_views, 3))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  eyes = dirs * radius
  ups = np.where(np.abs(dirs[:, 1:2]) > 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
  T = cameras.look_at(eyes, np.zeros(3), ups)
  K = np.tile(
    np.array([[f, 0, size / 2], [0, f * 1.02, size / 2 - 3], [0, 0, 1.0]]), (num_views, 1, 1)
  )
  return jnp.asarray(K, jnp.float32), T


@pytest.fixture
def rig():
  return sphere_rig()
