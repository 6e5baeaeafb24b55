"""Batches the single-image methods' tests share, as the input pipeline delivers them."""

import jax.numpy as jnp
import numpy as np


def _world_vertices(clip):
  """[1, n, 3] world vertices of a synthetic clip's frame (its stored pose and shape)."""
  from handflow.data import pipeline

  keys = ("hand_pose", "global_orient", "transl", "betas")
  return pipeline._synthetic_vertices(*(clip[k] for k in keys))


def clip_batch(views=2, size=32):
  """A synthetic clip's views as single images with their ground truth, as the pipeline
  (`data.single_view`, `pose_labels`) delivers them (no crop: the rendered frames)."""
  from handflow.data import crops, synthetic

  clip = synthetic.generate_clip((0, 9, 1), synthetic.SceneConfig(frames=1, views=views,
                                                                   image_size=size))  # fmt: skip
  v = views
  img = crops.normalise(clip["images"][0].astype(np.float32) / 255.0)
  rep = lambda x: jnp.asarray(np.repeat(x[None], v, 0))
  return {
    "images": jnp.asarray(img[:, None, None]),
    "K": jnp.asarray(clip["K"][0][:, None, None]),
    "T_cam_world": jnp.asarray(clip["T_cam_world"][0][:, None, None]),
    "xyz": rep(clip["xyz"]),
    "uv": jnp.asarray(clip["uv"][0][:, None, None]),
    "hand_pose": rep(clip["hand_pose"]),
    "global_orient": rep(clip["global_orient"]),
    "betas": rep(clip["betas"]),
    "transl": rep(clip["transl"]),
    "hand_mask": jnp.asarray(clip["hand_mask"][0][:, None, None], jnp.float32),
    "verts": rep(_world_vertices(clip)),
    "has_verts": jnp.ones((v, 1), bool),
    "image_id": jnp.arange(v),
    "mask": jnp.ones((v,)),
  }
