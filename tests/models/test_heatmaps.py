"""Reading joint heatmaps: the soft-argmax and the pooled features at known answers; the
supervision's minimum; CycleHand's 2D head on its map."""

import jax
import jax.numpy as jnp
import numpy as np

from handflow.methods import losses, single_image
from handflow.models import hand_pose_net, heatmaps


def test_a_sharp_peak_reads_its_cell_centre_and_feature():
  n, h, w, j, c = 2, 4, 8, 3, 5
  cells = [(0, 0), (3, 7), (1, 2)]  # (row, column) per joint
  logits = jnp.full((n, h, w, j), -1e4)
  for k, (r, col) in enumerate(cells):
    logits = logits.at[:, r, col, k].set(0.0)
  fmap = jax.random.normal(jax.random.key(0), (n, h, w, c))
  log_prob, mu, pooled = heatmaps.read(logits, fmap)
  assert log_prob.shape == (n, h, w, j)
  np.testing.assert_allclose(jnp.exp(log_prob).sum((1, 2)), 1.0, rtol=1e-6)
  for k, (r, col) in enumerate(cells):
    np.testing.assert_allclose(mu[:, k], [[(col + 0.5) / w, (r + 0.5) / h]] * n, atol=1e-6)
    np.testing.assert_allclose(pooled[:, k], fmap[:, r, col], atol=1e-5)


def test_uniform_heatmaps_read_the_crop_centre_and_the_mean_feature():
  fmap = jax.random.normal(jax.random.key(1), (1, 6, 6, 4))
  _, mu, pooled = heatmaps.read(jnp.zeros((1, 6, 6, 21)), fmap)
  np.testing.assert_allclose(mu, 0.5, atol=1e-6)
  np.testing.assert_allclose(pooled[0, 0], fmap[0].mean((0, 1)), atol=1e-5)


def test_the_heatmap_term_is_lowest_at_the_target_and_uses_pixel_centres():
  """Pixel (x, y) of a 16 px crop lies at ((x + 0.5) / 16, (y + 0.5) / 16) in crop units: on a
  4 x 4 map, pixel 6 is in the centre of cell 1 (crop unit 0.40625 -> cell centre 0.375)."""
  size, h = 16, 4
  uv = jnp.array([[[[[6.0, 10.0]] * 21]]])  # [1, 1, 1, 21, 2] pixels
  target = losses.heatmap_cross_entropy(
    jnp.zeros((1, h, h, 21)), (uv.reshape(1, 21, 2) + 0.5) / size
  )
  assert target.shape == (1, 21)
  batch = {"uv": uv}
  gx = (jnp.arange(h) + 0.5) / h
  u = (jnp.array([6.0, 10.0]) + 0.5) / size
  # The log of the target Gaussian itself minimises the cross-entropy (Gibbs' inequality).
  g = jnp.exp(-0.5 * ((gx[None, :] - u[0]) * h) ** 2 - 0.5 * ((gx[:, None] - u[1]) * h) ** 2)
  best = jnp.log(g / g.sum())[None, :, :, None].repeat(21, -1)
  shifted = jnp.roll(best, 1, axis=2)
  at_best = single_image.heatmap_term(best, batch, size)
  assert float(at_best[0]) < float(single_image.heatmap_term(shifted, batch, size)[0])
  uniform = single_image.heatmap_term(jnp.full((1, h, h, 21), -np.log(h * h)), batch, size)
  assert float(at_best[0]) < float(uniform[0])
  np.testing.assert_allclose(uniform, np.log(h * h), rtol=1e-6)


def test_the_keypoint_head_feeds_the_regressor_from_a_finer_map():
  net = hand_pose_net.HandPoseNet(
    backbone_depth=10, backbone_width=8, feature_dim=16, hidden=16, num_betas=5,
    texture_latent=4, texture_resolution=8, proj_dim=8, pool="flatten", pool_stride=16,
    pool_channels=4, keypoints=True, keypoint_stride=4, keypoint_channels=3,
  )  # fmt: skip
  img = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
  params = jax.jit(net.init)({"params": jax.random.key(0), "texture": jax.random.key(1)}, img[:1])
  # The regressor reads the 4 x 4 pooled cells, then 21 (u, v) and 21 x 3 joint features.
  assert params["params"]["global"]["kernel"].shape == (4 * 4 * 4 + 21 * 2 + 21 * 3, 16)
  out = jax.jit(net.apply)(params, img)
  assert out.log_heatmap.shape == (2, 16, 16, 21)
  np.testing.assert_allclose(jnp.exp(out.log_heatmap).sum((1, 2)), 1.0, rtol=1e-5)
