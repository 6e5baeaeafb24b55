import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import ust
from handflow.data import prepare, synthetic, synthetic_hands
from handflow.geometry import cameras
from handflow.hand import limits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  config = ust.get_config("tiny")
  config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  info = prepare.prepare(config)
  return config, info


def _examples(config, split):
  b = prepare.dataset_builder(config)
  return list(tfds.as_numpy(b.as_dataset(split=split)))


def test_counts_shapes_and_exact_projection(tiny):
  config, info = tiny
  assert info["splits"] == {"train": 4, "validation": 2, "test": 2}
  ex = _examples(config, "train")[0]
  t, v, s = config.data.frames, config.data.views, config.data.image_size
  assert ex["images"].shape == (t, v, s, s, 3) and ex["images"].dtype == np.uint8
  uv, depth = cameras.world_to_image(
    jnp.asarray(ex["K"]), jnp.asarray(ex["T_cam_world"]), jnp.asarray(ex["xyz"])[:, None]
  )
  assert np.abs(np.asarray(uv) - ex["uv"]).max() < 0.01
  assert np.all(np.asarray(depth) > 0.2)
  assert 0.2 < ex["visible"].mean() <= 1.0
  # The hand is in the crop: most keypoints project inside the image.
  assert np.mean((ex["uv"] >= 0) & (ex["uv"] < s)) > 0.9


def test_deterministic_and_splits_disjoint(tiny):
  config, _ = tiny
  stored = {int(e["clip_id"]): e for e in _examples(config, "test")}
  scene = synthetic_hands.config_from(config.data).scene
  again = synthetic.generate_clip((config.data.seed, synthetic_hands.SPLIT_SEEDS["test"], 1), scene)
  for k, val in again.items():
    np.testing.assert_array_equal(stored[1][k], val, err_msg=k)
  train0 = {int(e["clip_id"]): e for e in _examples(config, "train")}[0]
  assert not np.array_equal(train0["xyz"], stored[0]["xyz"])


def test_prepare_via_main_reuses_the_dataset(tiny):
  config, info = tiny
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "handflow.main",
      "--config=configs/ust.py:tiny",
      "--mode=prepare",
      f"--workdir={config.data.data_dir}/wd",
      f"--config.data.data_dir={config.data.data_dir}",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert "ready in" in r.stdout and "'train': 4" in r.stdout
  assert "Generating" not in r.stderr  # reused, not rebuilt


def test_bad_configs_are_named():
  with pytest.raises(ValueError, match="split 'test' needs at least 1 clip"):
    synthetic_hands.SyntheticHandsConfig.make(test=0)
  with pytest.raises(ValueError, match="views >= 2"):
    synthetic.SceneConfig(views=1)
  with pytest.raises(ValueError, match="pose_prior must be one of .* got 'pca'"):
    synthetic.SceneConfig(pose_prior="pca")
  config = ust.get_config("dexycb")
  config.data.name = "interhand26m"
  with pytest.raises(ValueError, match="dataset 'interhand26m' has no builder yet"):
    prepare.dataset_builder(config)
  hanco = ust.get_config("hanco")
  hanco.data.data_dir = "/nonexistent/tfds"
  with pytest.raises(ValueError, match="set config.data.manual_dir"):
    prepare.prepare(hanco)


def test_default_and_custom_configs_make_builders(tmp_path):
  default = prepare.dataset_builder(_with_dir(ust.get_config(), tmp_path))
  assert default.builder_config.scene == synthetic.SceneConfig()
  assert not default.is_prepared()
  custom = _with_dir(ust.get_config("views=4"), tmp_path)
  custom.data.rig_views = 4
  assert prepare.dataset_builder(custom).builder_config.scene.views == 4


def test_pose_priors_stay_in_limits_and_synergy_concentrates_articulation():
  """Both priors keep every joint within its limits; the synergy prior puts most of the
  articulation into its first principal direction (the hand's closure), as real hands do,
  while the independent one spreads it; the synergy prior is a dataset config of its own."""
  model = synthetic._load_model("open")
  axes = limits.joint_axes(model)
  top = {}
  for prior in synthetic.POSE_PRIORS:
    rng = np.random.default_rng(0)
    poses = np.stack([synthetic.random_pose(rng, axes, prior=prior) for _ in range(400)])
    excess = limits.violation(jnp.asarray(poses.reshape(-1, 15, 3)), axes)
    assert float(jnp.max(excess)) < 1e-6, prior
    centred = poses - poses.mean(0)
    var = np.linalg.svd(centred, compute_uv=False) ** 2
    top[prior] = var[0] / var.sum()
  assert top["synergy"] > 0.3 > top["independent"], top
  with pytest.raises(ValueError, match="pose prior must be one of"):
    synthetic.random_pose(np.random.default_rng(0), axes, prior="pca")
  synergy = synthetic_hands.SyntheticHandsConfig.make(pose_prior="synergy")
  assert synergy.name.endswith("_synergy") and synergy.scene.pose_prior == "synergy"
  assert synthetic_hands.SyntheticHandsConfig.make().scene.pose_prior == "independent"


def _with_dir(config, path):
  config.data.data_dir = str(path)
  return config


def test_worker_processes_generate_the_same_clips_in_order(monkeypatch):
  # Large builds generate clips in spawned workers; the bytes must not depend on it.
  monkeypatch.setattr(synthetic_hands._Pool, "MIN_CLIPS", 1)
  scene = synthetic.SceneConfig(frames=1, views=2, image_size=32)
  seeds = [(0, 1, i) for i in range(3)]
  pool = synthetic_hands._Pool(total_clips=3, splits=1)
  if pool._executor is None:
    pytest.skip("one CPU: no workers")
  clips = list(pool.map(seeds, scene))
  with pytest.raises(RuntimeError):  # the last split's generator shut the workers down
    pool._executor.submit(int)
  for seed, clip in zip(seeds, clips, strict=True):
    ref = synthetic.generate_clip(seed, scene)
    for k in ref:
      np.testing.assert_array_equal(clip[k], ref[k], err_msg=k)
