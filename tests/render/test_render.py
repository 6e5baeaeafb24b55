import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import hand
from handflow.geometry import cameras
from handflow.render import raster, shading, soft

K = jnp.asarray([[60.0, 0.0, 31.5], [0.0, 60.0, 31.5], [0.0, 0.0, 1.0]])
SIZE = (64, 64)
DENSE = ((64, 1.0),)  # every face against the whole image


def _square(z, half=0.1, offset=(0.0, 0.0)):
  ox, oy = offset
  v = jnp.asarray(
    [
      [-half + ox, -half + oy, z],
      [half + ox, -half + oy, z],
      [half + ox, half + oy, z],
      [-half + ox, half + oy, z],
    ]
  )
  return v, jnp.asarray([[0, 1, 2], [0, 2, 3]], jnp.int32)


def _pixel_centres():
  ys, xs = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
  return xs, ys


def test_square_matches_analytic_projection():
  v, f = _square(1.0)
  fr = raster.rasterize(v, f, K, SIZE, tiers=DENSE)
  xs, ys = _pixel_centres()
  lo, hi = 31.5 - 6.0, 31.5 + 6.0  # 60 px/m * 0.1 m at z = 1
  inside = (xs >= lo) & (xs <= hi) & (ys >= lo) & (ys <= hi)
  np.testing.assert_array_equal(np.asarray(fr.mask), inside)
  np.testing.assert_allclose(np.asarray(fr.depth)[inside], 1.0, atol=1e-6)
  # Interpolating vertex positions with the barycentrics back-projects the pixel centres.
  pts = shading.interpolate(fr, f, v)
  want = cameras.backproject(
    K, jnp.stack([xs, ys], -1).reshape(-1, 2).astype(jnp.float32), jnp.ones(64 * 64)
  ).reshape(64, 64, 3)
  np.testing.assert_allclose(np.asarray(pts)[inside], np.asarray(want)[inside], atol=1e-5)
  assert int(fr.overflow) == 0


def test_perspective_correct_depth_on_a_slanted_plane():
  v = jnp.asarray([[-0.2, -0.2, 0.8], [0.2, -0.2, 0.8], [0.0, 0.2, 1.4]])
  fr = raster.rasterize(v, jnp.asarray([[0, 1, 2]]), K, SIZE, tiers=DENSE)
  xs, ys = _pixel_centres()
  # The plane through the triangle: depth along each pixel ray, solved exactly.
  n = np.cross(v[1] - v[0], v[2] - v[0])
  rays = np.stack([(xs - 31.5) / 60.0, (ys - 31.5) / 60.0, np.ones_like(xs, float)], -1)
  depth = (n @ np.asarray(v[0])) / (rays @ n)
  m = np.asarray(fr.mask)
  assert m.sum() > 100
  np.testing.assert_allclose(np.asarray(fr.depth)[m], depth[m], rtol=1e-5)


def test_zbuffer_picks_the_nearest_face_in_any_order():
  far_v, f = _square(2.0, half=0.3)
  near_v, _ = _square(1.0, half=0.05, offset=(0.02, 0.0))
  v = jnp.concatenate([far_v, near_v])
  faces = jnp.concatenate([f, f + 4])
  for order in (faces, faces[::-1]):
    fr = raster.rasterize(v, order, K, SIZE, tiers=DENSE)
    ids = np.asarray(order)[np.asarray(fr.face_id)[32, 33]]
    assert ids.min() >= 4  # the near square's vertices
    np.testing.assert_allclose(fr.depth[32, 33], 1.0, atol=1e-6)
    np.testing.assert_allclose(fr.depth[25, 25], 2.0, atol=1e-6)  # the far square alone


def test_cube_silhouette_is_the_hull_of_its_corners():
  corners = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (-0.1, 0.1)])
  faces = np.array(
    [
      [0, 1, 3],
      [0, 3, 2],
      [4, 6, 7],
      [4, 7, 5],
      [0, 4, 5],
      [0, 5, 1],
      [2, 3, 7],
      [2, 7, 6],
      [0, 2, 6],
      [0, 6, 4],
      [1, 5, 7],
      [1, 7, 3],
    ]
  )
  T = cameras.look_at(jnp.asarray([0.5, 0.4, -0.7]), jnp.zeros(3))
  v = cameras.transform(T, jnp.asarray(corners, jnp.float32))
  fr = raster.rasterize(v, jnp.asarray(faces), K, SIZE, tiers=DENSE)
  uv, _ = cameras.project(K, v)
  from scipy.spatial import Delaunay

  hull = Delaunay(np.asarray(uv))
  xs, ys = _pixel_centres()
  inside = hull.find_simplex(np.stack([xs, ys], -1).reshape(-1, 2)).reshape(64, 64) >= 0
  mism = np.asarray(fr.mask) != inside
  assert mism.sum() <= 2  # pixel centres exactly on an edge may go either way
  assert np.asarray(fr.depth)[inside].min() > 0.7


def test_overflow_is_reported_and_vmap_matches():
  v, f = _square(1.0, half=0.2)  # 24 px wide: larger than a 4 px window
  small = raster.rasterize(v, f, K, SIZE, tiers=((4, 1.0),))
  assert int(small.overflow) == 2
  assert int(raster.rasterize(v, f, K, SIZE, tiers=((32, 1.0),)).overflow) == 0
  vb = jnp.stack([v, v + jnp.asarray([0.05, 0.0, 0.0])])
  batched = jax.vmap(lambda x: raster.rasterize(x, f, K, SIZE, tiers=DENSE))(vb)
  one = raster.rasterize(vb[1], f, K, SIZE, tiers=DENSE)
  np.testing.assert_array_equal(batched.face_id[1], one.face_id)
  np.testing.assert_allclose(batched.depth[1], one.depth)


def test_largest_first_is_a_stable_sort_by_clipped_extent():
  extent = np.random.default_rng(0).integers(0, 20, 500)
  order = np.asarray(raster._largest_first(jnp.asarray(extent, jnp.int32), cap=12))
  np.testing.assert_array_equal(order, np.argsort(-np.minimum(extent, 12), kind="stable"))


def test_per_coordinate_barycentrics_match_the_stacked_form():
  rng = np.random.default_rng(1)
  tri, p = rng.normal(0, 10, (200, 3, 2)), rng.normal(0, 10, (200, 2))
  tri[0] = [[0, 0], [1, 1], [2, 2]]  # degenerate: holds nothing
  tri, p = jnp.asarray(tri, jnp.float32), jnp.asarray(p, jnp.float32)
  bary, area = raster.barycentrics_xy(*raster.corners_xy(tri), p[:, 0], p[:, 1])
  stacked, area2 = raster.screen_barycentrics(tri, p)
  np.testing.assert_allclose(np.stack(bary, -1), stacked, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(area, area2)
  inside = np.asarray(raster.contains(tri, p))
  assert not inside[0] and inside.any() and not inside.all()
  np.testing.assert_array_equal(
    inside, np.all(np.asarray(stacked) >= 0, -1) & (np.abs(area2) > 1e-12)
  )


def test_open_hand_default_tiers_do_not_clip():
  m = hand.load("open")
  out = hand.forward(m, jnp.zeros(45))
  v = out.vertices - out.vertices.mean(0)
  T = cameras.look_at(jnp.asarray([0.0, 0.15, 0.6]), jnp.zeros(3))
  k128 = jnp.asarray([[300.0, 0, 63.5], [0, 300, 63.5], [0, 0, 1]])
  vc = cameras.transform(T, v)
  fr = raster.rasterize(vc, m.faces, k128, (128, 128))
  dense = raster.rasterize(vc, m.faces, k128, (128, 128), tiers=((128, 1.0),))
  assert int(fr.overflow) == 0
  np.testing.assert_array_equal(np.asarray(fr.mask), np.asarray(dense.mask))
  np.testing.assert_allclose(np.asarray(fr.depth), np.asarray(dense.depth), atol=1e-6)


def test_soft_silhouette_matches_hard_and_fits_a_translation():
  v, f = _square(1.0, half=0.15)
  hard = raster.rasterize(v, f, K, SIZE, tiers=DENSE)
  sil = soft.soft_silhouette(v, f, K, SIZE, sigma=0.3, tiers=DENSE)
  assert np.mean((np.asarray(sil) > 0.5) == np.asarray(hard.mask)) > 0.99
  target = soft.soft_silhouette(v + jnp.asarray([0.03, -0.02, 0.0]), f, K, SIZE, tiers=DENSE)

  def loss(t):
    return jnp.mean((soft.soft_silhouette(v + t, f, K, SIZE, tiers=DENSE) - target) ** 2)

  grad = jax.jit(jax.value_and_grad(loss))
  t = jnp.zeros(3)
  l0, g = grad(t)
  assert np.isfinite(g).all() and g[0] < 0 and g[1] > 0  # points towards the target
  for _ in range(60):
    _, g = grad(t)
    t = t - 0.5 * g / (jnp.linalg.norm(g) + 1e-9) * 0.01
  assert float(loss(t)) < 0.1 * float(l0)
  np.testing.assert_allclose(t[:2], [0.03, -0.02], atol=0.006)


def test_soft_depth_and_colour_aggregate_the_nearest_surface():
  far_v, f = _square(2.0, half=0.3)
  near_v, _ = _square(1.0, half=0.05)
  v = jnp.concatenate([far_v, near_v])
  faces = jnp.concatenate([f, f + 4])
  colors = jnp.concatenate(
    [
      jnp.tile(jnp.asarray([[1.0, 0.0, 0.0]]), (4, 1)),
      jnp.tile(jnp.asarray([[0.0, 0.0, 1.0]]), (4, 1)),
    ]
  )
  img = soft.soft_rasterize(
    v, faces, K, SIZE, colors, jnp.asarray([0.0, 1.0, 0.0]), gamma=1e-2, tiers=DENSE
  )
  np.testing.assert_allclose(img.color[32, 32], [0.0, 0.0, 1.0], atol=0.02)  # near: blue
  np.testing.assert_allclose(img.color[25, 25], [1.0, 0.0, 0.0], atol=0.02)  # far only: red
  np.testing.assert_allclose(img.color[0, 0], [0.0, 1.0, 0.0], atol=0.02)  # background
  np.testing.assert_allclose(img.depth[32, 32], 1.0, atol=0.02)
  g = jax.grad(lambda c: jnp.sum(soft.soft_rasterize(v, faces, K, SIZE, c, tiers=DENSE).color))(
    colors
  )
  assert np.isfinite(g).all()


def test_shading_and_texture_known_answers():
  n = jnp.asarray([[0.0, 0.0, -1.0]])  # facing the camera
  p = jnp.asarray([[0.0, 0.0, 1.0]])
  lit = shading.lambert(
    jnp.asarray([[0.5, 0.5, 0.5]]), n, p, jnp.asarray([0.0, 0.0, 0.0]), ambient=0.2, diffuse=0.8
  )
  np.testing.assert_allclose(lit, [[0.5, 0.5, 0.5]], atol=1e-6)  # 0.5 * (0.2 + 0.8 * 1)
  side = shading.lambert(jnp.ones((1, 3)) * 0.5, n, p, jnp.asarray([10.0, 0.0, 1.0]), ambient=0.2)
  np.testing.assert_allclose(side, [[0.1, 0.1, 0.1]], atol=1e-3)  # grazing light: ambient only
  tex = jnp.asarray([[[0.0], [1.0]], [[2.0], [3.0]]])  # 2 x 2
  np.testing.assert_allclose(
    shading.sample_texture(tex, jnp.asarray([[0.25, 0.25], [0.75, 0.75], [0.5, 0.5]])),
    [[0.0], [3.0], [1.5]],
    atol=1e-6,
  )
  v, f = _square(1.0)
  fr = raster.rasterize(v, f, K, SIZE, tiers=DENSE)
  img = shading.shade_hard(
    fr, v, f, jnp.ones((4, 3)) * 0.5, jnp.zeros(3), jnp.asarray([0.0, 1.0, 0.0])
  )
  np.testing.assert_allclose(img[0, 0], [0.0, 1.0, 0.0])
  assert float(img[32, 32, 0]) == pytest.approx(0.5 * (0.35 + 0.75), abs=0.01)
