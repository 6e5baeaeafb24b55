import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from configs import ust
from handflow.data import crops, pipeline
from handflow.geometry import cameras
from tests.data.test_synthetic_hands import tiny  # noqa: F401 - the shared tiny dataset fixture


def test_augmented_batches_keep_projection_exact(tiny):  # noqa: F811
  config, _ = tiny
  config = ust.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  config.data.supervised = True  # ground truth in training batches, for this check only
  batch = next(pipeline.batches(config, "train", train=True, seed=3))
  uv, _ = cameras.world_to_image(
    jnp.asarray(batch["K"]),
    jnp.asarray(batch["T_cam_world"]),
    jnp.asarray(batch["xyz"])[:, :, None],
  )
  assert np.abs(np.asarray(uv) - batch["uv"]).max() < 0.01
  # The crop's in-plane rotation went into the extrinsics (the camera frame turns with the
  # image, as a single-image regressor of camera-frame orientation needs), not into K.
  K = batch["K"]
  np.testing.assert_allclose(K[..., 0, 1], 0, atol=1e-3)
  np.testing.assert_allclose(K[..., 1, 0], 0, atol=1e-3)
  np.testing.assert_allclose(K[..., 0, 0], K[..., 1, 1], rtol=1e-4)
  # The camera centres are the dataset's: only the orientation about the optical axis changed.
  T_data = {}
  for ev in pipeline.batches(config, "train", train=False):
    T_data.update(
      zip(ev["clip_id"][ev["mask"] > 0], ev["T_cam_world"][ev["mask"] > 0], strict=True)
    )
  T, T0 = batch["T_cam_world"], np.stack([T_data[c] for c in batch["clip_id"]])
  R_z = T[..., :3, :3] @ np.swapaxes(T0[..., :3, :3], -1, -2)
  np.testing.assert_allclose(R_z[..., 2, :], np.broadcast_to([0, 0, 1], R_z.shape[:-1]), atol=1e-5)
  assert np.abs(R_z[..., 0, 1]).max() > 0.05  # augmented
  centre = lambda T: -np.einsum("...ji,...j->...i", T[..., :3, :3], T[..., :3, 3])
  np.testing.assert_allclose(centre(T), centre(T0), atol=1e-4)
  s = config.data.image_size
  assert batch["images"].shape == (config.batch_size, 2, 2, s, s, 3)
  assert np.isfinite(batch["images"]).all() and abs(batch["images"].mean()) < 3


def test_training_batches_hold_no_ground_truth_and_are_reproducible(tiny):  # noqa: F811
  config, _ = tiny
  a = next(pipeline.batches(config, "train", train=True, seed=5))
  b = next(pipeline.batches(config, "train", train=True, seed=5))
  assert not set(pipeline.GT_KEYS) & set(a)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert {"uv_pl", "conf", "K", "T_cam_world", "images", "mask"} <= set(a)


def test_image_and_cameras_move_together():
  """A marker pixel at a keypoint's projection lands where the updated K projects it."""
  config = ust.get_config("tiny")
  t, v, s_in = 2, 2, 64
  rng = np.random.default_rng(0)
  uv = rng.uniform(20, 44, (t, v, 21, 2)).astype(np.float32)
  uv[..., 0, :] = np.round(uv[..., 0, :])
  images = np.zeros((t, v, s_in, s_in, 3), np.uint8)
  for ti in range(t):
    for vi in range(v):
      x, y = uv[ti, vi, 0].astype(int)
      images[ti, vi, y, x] = 255
  ex = {
    "clip_id": tf.constant(7, tf.int64),
    "images": tf.constant(images),
    "K": tf.eye(3, batch_shape=[t, v]),
    "T_cam_world": tf.eye(4, batch_shape=[t, v]),
    "uv": tf.constant(uv),
    "visible": tf.ones((t, v, 21), tf.bool),
    "xyz": tf.zeros((t, 21, 3)),
  }
  config.data.pseudo_labels = {"preset": "clean", "noise": 0.0}
  out = pipeline._example_fn(config, "train", True, 0)(tf.constant(11, tf.int64), ex)
  img = crops.denormalise(out["images"].numpy())
  for ti in range(t):
    for vi in range(v):
      heat = img[ti, vi].mean(-1)
      heat = heat - np.median(heat)
      ys, xs = np.mgrid[0:32, 0:32]
      w = np.clip(heat, 0, None) * (heat > 0.5 * heat.max())
      centroid = [(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()]
      np.testing.assert_allclose(centroid, out["uv_pl"].numpy()[ti, vi, 0], atol=0.35)


def test_evaluation_is_padded_and_equal_across_hosts(tiny):  # noqa: F811
  config, _ = tiny
  per_host = [
    list(
      pipeline.batches(config, "test", train=False, process_index=i, process_count=2, batch_size=3)
    )
    for i in range(2)
  ]
  assert [len(b) for b in per_host] == [1, 1]
  masks = np.concatenate([b[0]["mask"] for b in per_host])
  assert masks.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
  ids = sorted(int(b[0]["clip_id"][0]) for b in per_host)
  assert ids == [0, 1]  # each test clip on exactly one host
  assert set(pipeline.GT_KEYS) <= set(per_host[0][0])


def test_clear_errors(tiny, tmp_path):  # noqa: F811
  config, _ = tiny
  config = ust.get_config("tiny")
  config.data.data_dir = tiny[0].data.data_dir
  config.data.views = 3
  with pytest.raises(pipeline.DataError, match="views = 3, but dataset 'synthetic_hands' has 2"):
    next(pipeline.batches(config, "train", train=True))
  fresh = ust.get_config("tiny")
  fresh.data.data_dir = str(tmp_path)
  with pytest.raises(pipeline.DataError, match="is not prepared in .*--mode=prepare"):
    next(pipeline.batches(fresh, "train", train=True))
  config.data.views = 2
  with pytest.raises(pipeline.DataError, match="no split 'nope'"):
    next(pipeline.batches(config, "nope", train=False))


def test_corrupt_record_is_named(tiny, tmp_path):  # noqa: F811
  import pathlib
  import shutil

  config, _ = tiny
  src = pathlib.Path(config.data.data_dir)
  dst = tmp_path / "copy"
  shutil.copytree(src, dst)
  for f in dst.rglob("*train.tfrecord*"):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # truncated mid-record
  broken = ust.get_config("tiny")
  broken.data.data_dir = str(dst)
  with pytest.raises(pipeline.DataError, match="is corrupt or unreadable"):
    for _ in range(3):
      next(pipeline.batches(broken, "train", train=True))


def test_training_resumes_at_a_data_position(tiny):  # noqa: F811
  config, _ = tiny
  it = pipeline.batches(config, "train", train=True, seed=2)
  third = [next(it) for _ in range(3)][-1]
  resumed = next(pipeline.batches(config, "train", train=True, seed=2, start_step=2))
  for k in third:
    np.testing.assert_array_equal(third[k], resumed[k], err_msg=k)
