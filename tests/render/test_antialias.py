"""The antialiased z-buffer renderer (render/antialias.py, hand_render.render_aa)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import hand
from handflow.render import antialias, hand_render, raster

SIZE = 48
K = jnp.asarray([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]])
QUAD = jnp.asarray([[0, 1, 2], [0, 2, 3]])


def _rect(x0, x1, y0, y1, z=1.0):
  """A screen rectangle (pixels) as two triangles at depth z, in the camera frame."""
  px = jnp.stack([jnp.stack([x0, y0]), jnp.stack([x1, y0]), jnp.stack([x1, y1]),
                  jnp.stack([x0, y1])])  # fmt: skip
  return jnp.concatenate([px / 100.0 * z, jnp.full((4, 1), z)], -1)


def _render(verts, faces, colors):
  """Antialiased [h, w, c + 1]: per-face colours [f, c] and coverage, background 0."""
  frags = raster.rasterize(verts, faces, K, (SIZE, SIZE), tiers=((SIZE, 1.0),))
  tri, _ = raster.screen_faces(verts, faces, K)
  attrs = jnp.concatenate([colors, jnp.ones((colors.shape[0], 1))], -1)[
    jnp.maximum(frags.face_id, 0)
  ]
  attrs = jnp.where(frags.mask[..., None], attrs, 0.0)
  return antialias.antialias(frags.face_id, tri, faces, attrs)


def _coverage(x0, x1, y0, y1):
  return _render(_rect(x0, x1, y0, y1), QUAD, jnp.zeros((2, 0)))[..., 0]


def test_coverage_follows_each_edge_with_its_length_as_gradient():
  x0, x1, y0, y1 = 10.3, 30.6, 5.2, 35.7
  area = (x1 - x0) * (y1 - y0)
  total = lambda *r: jnp.sum(_coverage(*r))
  assert float(total(x0, x1, y0, y1)) == pytest.approx(area, abs=2.0)
  g = jax.grad(total, argnums=(0, 1, 2, 3))(x0, x1, y0, y1)
  # Moving an edge by one pixel adds the pixel rows (or columns) it crosses: 30 and 20 here.
  np.testing.assert_allclose(np.array(g), [-30.0, 30.0, -20.0, 20.0], atol=1e-3)
  # A translation leaves the area: the two sides' gradients cancel.
  assert float(jax.grad(lambda d: total(x0 + d, x1 + d, y0, y1))(0.0)) == pytest.approx(0, abs=1e-3)
  # Between pixel-crossing events the coverage is linear in the edge: finite differences agree.
  eps = 0.05
  fd = (total(x0, x1 + eps, y0, y1) - total(x0, x1 - eps, y0, y1)) / (2 * eps)
  assert float(fd) == pytest.approx(float(g[1]), rel=1e-3)


def test_interior_pixels_are_untouched_and_edge_pixels_get_the_covered_share():
  cov = _coverage(10.3, 30.6, 5.2, 35.7)
  assert float(jnp.max(jnp.abs(cov[8:34, 12:29] - 1.0))) == 0.0  # far from every edge
  assert float(jnp.max(cov[:4])) == 0.0 and float(jnp.max(cov[:, 33:])) == 0.0
  # Column 10's centre is outside the left edge at 10.3 ... its right neighbour sees the edge at
  # t = 0.7 from column 11's centre towards column 10: 0.2 of column 10 covered; the right edge
  # at 30.6 leaves column 30 whole and covers 0.1 of column 31.
  np.testing.assert_allclose(cov[20, 10], 0.2, atol=1e-5)
  np.testing.assert_allclose(cov[20, 30], 1.0, atol=1e-5)
  np.testing.assert_allclose(cov[20, 31], 0.1, atol=1e-5)


def test_an_occluded_edge_has_no_gradient_and_a_visible_one_blends_the_colours():
  """A red square in front of a larger green one: the front square's edge blends red into
  green with the edge's length as gradient; the back square's left edge counts only where it
  is not hidden behind the red one."""

  def image(front_x1, back_x0):
    front = _rect(jnp.float32(10.2), front_x1, jnp.float32(10.2), jnp.float32(30.7), z=1.0)
    back = _rect(back_x0, jnp.float32(40.4), jnp.float32(5.3), jnp.float32(40.6), z=2.0)
    verts = jnp.concatenate([front, back])
    faces = jnp.concatenate([QUAD, QUAD + 4])
    colors = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    return _render(verts, faces, colors)

  red = lambda fx, bx: jnp.sum(image(fx, bx)[..., 0])
  g_front, g_back = jax.grad(red, argnums=(0, 1))(jnp.float32(25.6), jnp.float32(15.3))
  assert float(g_front) == pytest.approx(20.0, abs=1e-3)  # rows 11..30
  assert float(g_back) == 0.0  # no red changes where the back square's edge moves
  green = lambda bx: jnp.sum(image(jnp.float32(25.6), bx)[..., 1])
  # Its rows 6..40 less the 20 behind the red square (11..30): 15 visible.
  assert float(jax.grad(green)(jnp.float32(15.3))) == pytest.approx(-15.0, abs=1e-3)


def test_hand_render_aa_is_differentiable_and_matches_the_hard_render():
  model = hand.load("open", "right")
  faces = model.faces
  out = hand.forward(model, jnp.zeros((45,)))
  verts = out.vertices - jnp.mean(out.vertices, 0) + jnp.asarray([0.0, 0.0, 0.5])
  f = 64 * 0.5 / 0.24
  Kh = jnp.asarray([[f, 0.0, 31.5], [0.0, f, 31.5], [0.0, 0.0, 1.0]])
  albedo = jnp.full((faces.shape[0], 3, 3), 0.6)
  light = hand_render.Light(jnp.float32(0.4), jnp.float32(0.6), jnp.asarray([0.1, -0.1, 0.0]))
  bg = jnp.full((64, 64, 3), 0.1)
  rgb, cov = hand_render.render_aa(verts, faces, Kh, (64, 64), albedo, light, bg)
  hard = raster.rasterize(verts, faces, Kh, (64, 64)).mask
  # Coverage differs from the hard mask only on its boundary pixels.
  inner = np.asarray(hard) & np.asarray(cov == 1.0)
  assert inner.sum() > 0.8 * np.asarray(hard).sum()
  assert float(jnp.min(cov)) >= 0.0 and float(jnp.max(cov)) <= 1.0
  assert abs(float(jnp.sum(cov)) - float(jnp.sum(hard))) < 0.1 * float(jnp.sum(hard))

  def loss(shift, alb):
    r, c = hand_render.render_aa(verts + shift, faces, Kh, (64, 64), alb, light, bg)
    return jnp.mean((r - rgb) ** 2 + 0.5) + jnp.mean(c)

  g_shift, g_alb = jax.grad(loss, argnums=(0, 1))(jnp.asarray([0.002, 0.0, 0.0]), albedo)
  assert np.all(np.isfinite(np.asarray(g_shift))) and float(jnp.abs(g_shift[0])) > 0
  assert np.all(np.isfinite(np.asarray(g_alb))) and float(jnp.sum(jnp.abs(g_alb))) > 0


def test_a_batch_compacted_to_any_capacity_renders_and_differentiates_as_one_by_one():
  model = hand.load("open", "right")
  rng = np.random.default_rng(0)
  out = hand.forward(model, jnp.asarray(rng.normal(0, 0.3, (2, 45)), jnp.float32))
  # A near hand fills most of the crop, a far one a little: the batch's pixel pairs that can
  # blend are between 1% and 99% of all, so 0.99 takes the compacted walk, 0.01 overflows.
  depth = jnp.asarray([[0.0, 0.0, 0.4], [0.02, 0.0, 0.9]])
  verts = out.vertices - jnp.mean(out.vertices, 1, keepdims=True) + depth[:, None]
  Kh = jnp.broadcast_to(jnp.asarray([[60.0, 0, 15.5], [0, 60.0, 15.5], [0, 0, 1]]), (2, 3, 3))
  albedo = jnp.asarray(rng.uniform(0.2, 0.9, (2, model.faces.shape[0], 3, 3)), jnp.float32)
  light = hand_render.Light(jnp.full((2,), 0.4), jnp.full((2,), 0.6), jnp.zeros((2, 3)))
  bg = jnp.full((2, 32, 32, 3), 0.1)
  one = lambda v, k, a, lt, g: hand_render.render_aa(v, model.faces, k, (32, 32), a, lt, g)
  batch = lambda c: (
    lambda v, a: hand_render.render_aa_batch(v, model.faces, Kh, (32, 32), a, light, bg, capacity=c)
  )
  renders = {"one by one": lambda v, a: jax.vmap(one)(v, Kh, a, light, bg), 0.99: batch(0.99),
             0.01: batch(0.01)}  # fmt: skip

  def value_and_grads(render):
    def loss(v, a):
      rgb, cov = render(v, a)
      return jnp.sum(rgb * bg) + jnp.sum(cov**2), (rgb, cov)

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(verts, albedo)

  ref = value_and_grads(renders.pop("one by one"))
  assert 0.02 < float(hand_render.blend_share(verts, model.faces, Kh, (32, 32))) < 0.98
  for capacity, render in renders.items():
    for x, y in zip(jax.tree.leaves(value_and_grads(render)), jax.tree.leaves(ref), strict=True):
      np.testing.assert_allclose(x, y, atol=1e-5, err_msg=f"capacity {capacity}")


def test_face_neighbours_match_an_edge_count_and_are_mutual():
  faces = np.asarray(hand.load("open", "right").faces)
  nb = np.asarray(jax.jit(antialias.face_neighbours)(jnp.asarray(faces)))
  edges = {}
  for f, tri in enumerate(faces):
    for k in range(3):
      edges.setdefault(frozenset((tri[k], tri[(k + 1) % 3])), []).append((f, k))
  for owners in edges.values():
    for f, k in owners:
      others = [g for g, _ in owners if g != f]
      assert nb[f, k] == (others[0] if len(others) == 1 else nb[f, k])
      if len(owners) == 1:
        assert nb[f, k] == -1
  f, k = np.nonzero(nb >= 0)
  assert np.all(np.any(nb[nb[f, k]] == f[:, None], axis=1))  # g across f's edge has f across one
