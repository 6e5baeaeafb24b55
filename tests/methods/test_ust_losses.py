"""UST-Hand's named loss terms: known answers on exact labels, masks, gradient routing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow.geometry import cameras
from handflow.methods import losses, ust_losses


def _rig(b=1, t=1, v=3):
  rng = np.random.default_rng(0)
  eyes = rng.normal(size=(v, 3))
  eyes = 0.6 * eyes / np.linalg.norm(eyes, axis=-1, keepdims=True)
  T = cameras.look_at(jnp.asarray(eyes, jnp.float32), jnp.zeros((v, 3)))
  K = jnp.asarray([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
  x = jnp.asarray(rng.normal(scale=0.05, size=(b, t, 21, 3)), jnp.float32)
  batch = {
    "K": jnp.broadcast_to(K, (b, t, v, 3, 3)),
    "T_cam_world": jnp.broadcast_to(T, (b, t, v, 4, 4)),
  }
  return batch, x


def test_reprojection_is_zero_on_exact_labels_and_ignores_zero_weight_outliers():
  batch, x = _rig()
  u = ust_losses.project(batch, x, 64)
  w = jnp.ones(u.shape[:-1])
  assert float(ust_losses.reprojection(u, u, w)) == pytest.approx(0.0, abs=1e-9)
  bad = u.at[0, 0, 1, 4].add(jnp.asarray([jnp.nan, 0.3]))  # a NaN label with weight 0
  w0 = w.at[0, 0, 1, 4].set(0.0)
  assert float(ust_losses.reprojection(u, bad, w0)) == pytest.approx(0.0, abs=1e-9)
  shifted = u + 0.1  # linear regime of the smooth L1: |d| - delta/2 per coordinate
  assert float(ust_losses.reprojection(shifted, u, w)) == pytest.approx(2 * (0.1 - 0.01), rel=1e-4)


def test_consistency_term_routes_gradients_one_way():
  mu = jnp.full((1, 1, 2, 21, 2), 0.4)
  proj = jnp.full((1, 1, 2, 21, 2), 0.5)
  m4 = jnp.ones((1, 1, 1, 1))
  g_mu, g_proj = jax.grad(ust_losses.to_fused, argnums=(0, 1))(mu, proj, m4)
  assert float(jnp.abs(g_mu).max()) > 0 and float(jnp.abs(g_proj).max()) == 0.0


def test_heatmap_cross_entropy_is_smallest_at_the_label():
  h = w = 8
  u = jnp.asarray([[[0.3, 0.6]]])  # [1, 1 joint, 2]
  gx, gy = (jnp.arange(w) + 0.5) / w, (jnp.arange(h) + 0.5) / h

  def log_heatmap(c):
    logits = -((gx[None, :] - c[0]) ** 2 + (gy[:, None] - c[1]) ** 2) * 200.0
    return jax.nn.log_softmax(logits.reshape(-1)).reshape(1, h, w, 1)

  at = losses.heatmap_cross_entropy(log_heatmap(u[0, 0]), u)
  off = losses.heatmap_cross_entropy(log_heatmap(jnp.asarray([0.7, 0.2])), u)
  assert at.shape == (1, 1) and float(at[0, 0]) < float(off[0, 0])
