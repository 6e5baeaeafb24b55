"""TFDS builder `synthetic_hands`: the embedded multi-view clip dataset (see `synthetic.py`).

  builder = synthetic_hands.builder(SyntheticHandsConfig.make(frames=4, views=8, ...), data_dir)
  builder.download_and_prepare()          # offline: nothing is downloaded
  ds = builder.as_dataset(split="train")

Built through handflow's `--mode=prepare` (the TFDS CLI needs apache-beam, which handflow does
not depend on); `train`, `validation` and `test` are generated from disjoint seed streams, and
a clip is a deterministic function of (split, index, config). The config's name encodes every
parameter, so different settings never share files. Large builds generate clips in worker
processes (`_Pool`), in order.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds

from handflow.data import manual, synthetic

SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3}


class SyntheticHandsConfig(tfds.core.BuilderConfig):
  """Scene parameters and clips per split; `make` names the config from its parameters."""

  def __init__(self, *, scene: synthetic.SceneConfig, clips: dict[str, int], seed: int, **kw):
    super().__init__(**kw)
    self.scene = scene
    self.clips = dict(clips)
    self.seed = seed

  @classmethod
  def make(
    cls,
    *,
    frames=4,
    views=8,
    image_size=128,
    train=400,
    validation=40,
    test=80,
    occluder_rate=0.15,
    hand_model="open",
    pose_prior="independent",
    seed=0,
  ):
    scene = synthetic.SceneConfig(
      frames=frames,
      views=views,
      image_size=image_size,
      hand_model=hand_model,
      occluder_rate=occluder_rate,
      pose_prior=pose_prior,
    )
    clips = {"train": train, "validation": validation, "test": test}
    for split, n in clips.items():
      if n < 1:
        raise ValueError(f"synthetic_hands: split '{split}' needs at least 1 clip, got {n}")
    if hand_model != "open":
      raise ValueError(
        "synthetic_hands: only the open hand is supported as the dataset's hand model (a MANO "
        "file changes the vertex count, which the stored parameters do not record)"
      )
    name = (
      f"t{frames}_v{views}_s{image_size}_c{train}-{validation}-{test}"
      f"_occ{int(round(occluder_rate * 100))}_seed{seed}"
      + ("" if pose_prior == "independent" else f"_{pose_prior}")
    )
    return cls(
      name=name,
      scene=scene,
      clips=clips,
      seed=seed,
      description=f"{frames} frames x {views} views, {image_size}px crops",
    )


class SyntheticHands(tfds.core.GeneratorBasedBuilder):
  """Synthetic multi-view hand video with exact ground truth (handflow)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First version: open hand, HanCo-like rig, procedural scenes.",
    "1.1.0": "hand_mask: the hand's pixels not under an occluder (photometric losses).",
  }
  BUILDER_CONFIGS = [SyntheticHandsConfig.make()]

  def _info(self) -> tfds.core.DatasetInfo:
    sc = self.builder_config.scene
    t, v, s = sc.frames, sc.views, sc.image_size
    f = tfds.features
    return self.dataset_info_from_configs(
      features=f.FeaturesDict(
        {
          "clip_id": f.Scalar(np.int64),
          "images": f.Tensor(shape=(t, v, s, s, 3), dtype=np.uint8, encoding="zlib"),
          "hand_mask": f.Tensor(shape=(t, v, s, s), dtype=np.bool_, encoding="zlib"),
          "K": f.Tensor(shape=(t, v, 3, 3), dtype=np.float32),
          "T_cam_world": f.Tensor(shape=(t, v, 4, 4), dtype=np.float32),
          "xyz": f.Tensor(shape=(t, 21, 3), dtype=np.float32),
          "uv": f.Tensor(shape=(t, v, 21, 2), dtype=np.float32),
          "visible": f.Tensor(shape=(t, v, 21), dtype=np.bool_),
          "hand_pose": f.Tensor(shape=(t, 45), dtype=np.float32),
          "global_orient": f.Tensor(shape=(t, 3), dtype=np.float32),
          "transl": f.Tensor(shape=(t, 3), dtype=np.float32),
          "betas": f.Tensor(shape=(None,), dtype=np.float32),
        }
      ),
      homepage="https://github.com/handflow/handflow",
      citation="",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is generated locally
    cfg = self.builder_config
    pool = _Pool(sum(cfg.clips.values()), len(cfg.clips))
    return {split: self._generate_examples(split, pool) for split in cfg.clips}

  def _generate_examples(self, split, pool):
    cfg = self.builder_config
    seeds = [(cfg.seed, SPLIT_SEEDS[split], i) for i in range(cfg.clips[split])]
    for i, clip in enumerate(pool.map(seeds, cfg.scene)):
      yield f"{split}-{i:06d}", {"clip_id": i, **clip}


def _generate(seed, scene):
  return synthetic.generate_clip(seed, scene)


class _Pool:
  """Clip generation in worker processes when a build is large enough to pay for starting them
  (each imports JAX and compiles the renderer, ~20 s; rendering keeps about one core busy).
  Clips are deterministic in their seeds, so the bytes do not depend on the worker count. Shut
  down after the last of `splits` generators is exhausted."""

  MIN_CLIPS = 64

  def __init__(self, total_clips: int, splits: int):
    workers = min(os.cpu_count() or 1, 8)
    self._executor = None
    if workers > 1 and total_clips >= self.MIN_CLIPS:
      # spawn: the parent has initialised JAX, which is not fork-safe.
      ctx = multiprocessing.get_context("spawn")
      self._executor = futures.ProcessPoolExecutor(workers, mp_context=ctx)
    self._left = splits

  def map(self, seeds, scene):
    try:
      if self._executor is None:
        yield from (_generate(s, scene) for s in seeds)
      else:
        yield from self._executor.map(_generate, seeds, [scene] * len(seeds), chunksize=2)
    finally:
      self._left -= 1
      if self._left == 0 and self._executor is not None:
        self._executor.shutdown(cancel_futures=True)


def builder(config: SyntheticHandsConfig, data_dir: str | None = None) -> SyntheticHands:
  return manual.make_builder(SyntheticHands, config, data_dir)


def config_from(data_config) -> SyntheticHandsConfig:
  """The dataset config of an experiment's `config.data` (ml_collections); keys it does not set
  take `SyntheticHandsConfig.make`'s defaults."""
  d = data_config
  kw = {"frames": d.frames, "views": d.get("rig_views", d.views), "image_size": d.image_size}
  kw.update(
    {k: d.clips[k] for k in ("train", "validation", "test") if "clips" in d and k in d.clips}
  )
  kw.update({k: d[k] for k in ("occluder_rate", "pose_prior", "seed") if k in d})
  return SyntheticHandsConfig.make(**kw)
