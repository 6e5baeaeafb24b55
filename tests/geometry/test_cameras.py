import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from handflow.geometry import cameras


def _points(n=21, seed=0):
  return np.random.default_rng(seed).normal(0, 0.05, (n, 3)).astype(np.float32)


def test_look_at_puts_target_on_the_optical_axis(rig):
  K, T = rig
  origin_cam = cameras.transform(T, jnp.zeros((8, 1, 3)))
  np.testing.assert_allclose(origin_cam[..., :2], 0.0, atol=1e-6)
  np.testing.assert_allclose(origin_cam[..., 2], 0.6, atol=1e-6)
  r = T[:, :3, :3]
  np.testing.assert_allclose(
    r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-6
  )
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-6)


def test_transform_invert_round_trip():
  r = Rotation.random(5, random_state=0).as_matrix().astype(np.float32)
  t = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
  T = cameras.make_transform(jnp.asarray(r), jnp.asarray(t))
  x = _points()
  back = cameras.transform(cameras.invert(T), cameras.transform(T, np.broadcast_to(x, (5, 21, 3))))
  np.testing.assert_allclose(back, np.broadcast_to(x, (5, 21, 3)), atol=1e-6)


def test_project_known_answer_and_backproject():
  K = jnp.asarray([[500.0, 0, 100], [0, 400, 50], [0, 0, 1]])
  uv, depth = cameras.project(K, jnp.asarray([[0.1, -0.2, 2.0]]))
  np.testing.assert_allclose(uv, [[100 + 500 * 0.05, 50 - 400 * 0.1]])
  np.testing.assert_allclose(depth, [2.0])
  np.testing.assert_allclose(cameras.backproject(K, uv, depth), [[0.1, -0.2, 2.0]], atol=1e-6)


def test_projection_matrix_agrees_with_project(rig):
  K, T = rig
  x = _points()
  uv, _ = cameras.world_to_image(K, T, np.broadcast_to(x, (8, 21, 3)))
  P = cameras.projection_matrix(K, T)
  xh = np.concatenate([x, np.ones((21, 1), np.float32)], 1)
  ph = np.einsum("vij,nj->vni", P, xh)
  np.testing.assert_allclose(uv, ph[..., :2] / ph[..., 2:], rtol=1e-5, atol=1e-3)


def test_warped_K_keeps_projection_exact(rig):
  """Crop, resize and in-plane rotation: projecting with K' equals warping the projection."""
  K, T = rig
  x = np.broadcast_to(_points(), (8, 21, 3))
  uv, _ = cameras.world_to_image(K, T, x)
  crop = cameras.crop_resize_affine(jnp.asarray([37.0, 20.0, 150.0, 130.0]), (128, 96))
  rot = cameras.rotation_affine(jnp.asarray(0.7), jnp.asarray([64.0, 48.0]))
  A = cameras.compose_affine(rot, crop)
  K2 = cameras.warp_K(K, jnp.broadcast_to(A, (8, 2, 3)))
  uv2, _ = cameras.world_to_image(K2, T, x)
  np.testing.assert_allclose(uv2, cameras.warp_points(A, uv), atol=2e-3)
  np.testing.assert_allclose(cameras.warp_points(cameras.invert_affine(A), uv2), uv, atol=2e-3)


def test_crop_resize_pixel_centres():
  A = cameras.crop_resize_affine(jnp.asarray([10.0, 20.0, 50.0, 25.0]), (100, 50))
  # The crop's corner (x0 - 0.5, y0 - 0.5) -> (-0.5, -0.5); its far corner -> (W - 0.5, H - 0.5).
  pts = jnp.asarray([[9.5, 19.5], [59.5, 44.5], [10.0, 20.0]])
  np.testing.assert_allclose(cameras.warp_points(A, pts), [[-0.5, -0.5], [99.5, 49.5], [0.5, 0.5]])


def test_rotation_affine_direction():
  # A point right of the centre moves up the screen (y down) under a +90 degree rotation.
  A = cameras.rotation_affine(jnp.asarray(np.pi / 2), jnp.asarray([10.0, 10.0]))
  np.testing.assert_allclose(
    cameras.warp_points(A, jnp.asarray([[11.0, 10.0]])), [[10.0, 9.0]], atol=1e-6
  )


def test_opengl_round_trip():
  x = _points()
  gl = cameras.opencv_to_opengl(jnp.asarray(x))
  np.testing.assert_allclose(gl[:, 1:], -x[:, 1:])
  np.testing.assert_allclose(cameras.opengl_to_opencv(gl), x)


def test_affine_helpers_stay_in_numpy_for_numpy_inputs():
  # The input pipeline calls them from tf.data threads: no JAX op may be dispatched there.
  rng = np.random.default_rng(0)
  ctr, side = rng.uniform(20, 100, (3, 2)), rng.uniform(30, 60, (3,))
  angle, K = rng.uniform(-1, 1, (3,)), np.tile(np.eye(3, dtype=np.float32), (3, 1, 1))
  uv = rng.uniform(0, 128, (3, 5, 2))

  def chain(ctr, side, angle, K, uv):
    A = cameras.compose_affine(
      cameras.rotation_affine(angle, ctr * 0 + 31.5), cameras.square_crop_affine(ctr, side, 64)
    )
    return [A, cameras.invert_affine(A), cameras.warp_K(K, A), cameras.warp_points(A, uv)]

  as_np = chain(ctr, side, angle, K, uv)
  as_jax = chain(*(jnp.asarray(x, jnp.float32) for x in (ctr, side, angle, K, uv)))
  for a, b in zip(as_np, as_jax, strict=True):
    assert type(a) is np.ndarray and isinstance(b, jax.Array)
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-3)


def test_in_plane_rotation_moves_into_the_extrinsics():
  """[rot; 0 0 1] K = K' R_z: K' keeps square pixels without skew, and K', R_z T project as
  the warped K with T does."""
  K = np.array([[200.0, 0.0, 60.0], [0.0, 200.0, 70.0], [0.0, 0.0, 1.0]])
  T = np.asarray(cameras.make_transform(jnp.eye(3), jnp.asarray([0.1, 0.2, 0.5])))
  angle = np.array(0.6)
  A = cameras.compose_affine(
    cameras.rotation_affine(angle, np.array([31.5, 31.5])),
    cameras.square_crop_affine(np.array([50.0, 60.0]), np.array(40.0), 64),
  )
  R_z = cameras.in_plane_rotation(angle)
  K2 = cameras.warp_K(K, A) @ R_z.T
  np.testing.assert_allclose(K2[[0, 1, 2, 2], [1, 0, 0, 1]], 0, atol=1e-9)
  np.testing.assert_allclose(K2[0, 0], 320.0)  # 40 px -> 64 px
  x = _points()
  uv, _ = cameras.world_to_image(cameras.warp_K(K, A), T, x)
  uv2, _ = cameras.world_to_image(K2, cameras.rotate_camera(R_z, T), x)
  np.testing.assert_allclose(uv2, uv, atol=1e-3)
