"""The input pipeline: TFDS -> per-host shard -> pseudo-labels -> crop + augment -> batches.

  for batch in pipeline.batches(config, "train", train=True):   # NumPy dicts, forever
  for batch in pipeline.batches(config, "test", train=False):   # one padded pass

Per example (a clip [t, v, ...]):
- pseudo-labels from the simulated detector (`pseudo_labels.simulate`, config.data.pseudo_labels),
  deterministic per (split, clip, seed): `uv_pl [t, v, 21, 2]`, `conf [t, v, 21]`;
- per view and frame, a square crop around the confident pseudo-labels (as a detector-driven
  crop on real data; without one, around the dataset's hand `box` where it ships one, else the
  whole image) and, when training, random scale, rotation and translation: one pixel
  affine A, applied to the image by TF's projective transform and to the cameras exactly
  ([A; 0 0 1] K = K' R_z: the crop's scale and shift go into the intrinsics K', its in-plane
  rotation R_z about the optical axis into the extrinsics, T_cam_world' = R_z T_cam_world),
  to the pseudo-labels (uv' = A uv) and to the 2D ground truth. The rotation belongs to the
  camera, not the intrinsics, because a single-image regressor predicts the hand's
  orientation in the camera frame: the frame must turn with the image it sees;
- colour jitter (train), normalisation; views beyond config.data.views are dropped.
Batches are [b, t, v, ...] with b = per-host batch size (`data.single_view`: every view of every
frame is its own example, t = v = 1, with an `image_id`, shuffled across clips when training);
evaluation pads the last batch with `mask = 0` samples and gives every host the same number of
batches. Ground truth (`xyz`, `uv`, `visible`, and `verts` [t, n, 3] / `has_verts` [t], the
ground-truth mesh where the dataset has one) is only included for evaluation, or when
`config.data.supervised` is set. `data.masks` adds the dataset's hand masks (`hand_mask [t, v, size,
size]`, 1 on the hand), cropped with the image.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from handflow import hand
from handflow.data import crops, prepare, pseudo_labels, subsets

GT_KEYS = ("xyz", "uv", "visible", "verts", "has_verts")
MANO_KEYS = ("hand_pose", "global_orient", "transl", "betas")


@functools.cache
def _synthetic_hand():
  return hand.load("open")  # synthetic_hands is always rendered with the open hand


@functools.cache
def _synthetic_forward():
  return jax.jit(functools.partial(hand.forward, _synthetic_hand()))


def _synthetic_vertices(hand_pose, global_orient, transl, betas):
  """[t, n, 3] world vertices of a synthetic clip (its stored pose and shape)."""
  out = _synthetic_forward()(hand_pose, betas, global_orient=global_orient, transl=transl)
  return np.asarray(out.vertices, np.float32)


SPLIT_IDS = {"train": 1, "validation": 2, "test": 3}


class DataError(ValueError):
  """A dataset that is missing, unreadable or does not fit the config."""


def crop_size(config) -> int:
  """The network's input side in pixels: `config.data.crop_size`, or the dataset's image size."""
  return int(config.data.get("crop_size", 0) or config.data.image_size)


def detector_config(config) -> pseudo_labels.DetectorConfig:
  return pseudo_labels.from_config(config.data.get("pseudo_labels", None))


_SAID = set()


def _detected(config, split):
  """MediaPipe's labels of synthetic_hands' split ({clip_id: (uv, conf)}), or None (then the
  simulated detector is used, said once)."""
  source = config.data.get("pseudo_labels", {}).get("source", "simulated")
  if source != "mediapipe" or config.data.name != "synthetic_hands":
    return None
  from handflow.data import detected_labels

  labels = detected_labels.load(prepare.dataset_builder(config), base_split(split))
  if labels is None and "mediapipe" not in _SAID:
    _SAID.add("mediapipe")
    print(
      "handflow: no MediaPipe environment (python -m handflow.data.detect creates it): using "
      f"the simulated detector, preset '{config.data.pseudo_labels.preset}'",
      flush=True,
    )
  return labels


def clip_key(config, split: str, clip_id) -> tuple:
  """The simulated detector's key of a clip: (data seed, split, clip id)."""
  return (int(config.data.get("seed", 0)), SPLIT_IDS.get(base_split(split), 9), int(clip_id))


def _pseudo_labels_fn(config, split):
  det = detector_config(config)
  detected = _detected(config, split)

  def fn(uv, visible, T_cam_world, clip_id):
    if detected is not None:  # real detections of these renders (MediaPipe)
      if int(clip_id) not in detected:
        raise DataError(f"no MediaPipe labels for clip {int(clip_id)} of split '{split}'")
      pl, conf = detected[int(clip_id)]
      v = uv.shape[1]
      return pl[:, :v].astype(np.float32), conf[:, :v].astype(np.float32)
    out = pseudo_labels.simulate_clip(
      uv, visible, T_cam_world, det, clip_key(config, split, clip_id)
    )
    return out.uv, out.confidence

  return fn


def _example_fn(config, split, train, seed):
  size = crop_size(config)
  views = config.data.views
  supervised = bool(config.data.get("supervised", False))
  masks = bool(config.data.get("masks", False))
  pl_fn = _pseudo_labels_fn(config, split)

  def fn(index, ex):
    clip_id = ex["clip_id"]
    sl = lambda x: x[:, :views]
    images = ex["images"]
    if images.shape.rank == 4:  # stored frame-major [t * v, s, s, 3] (JPEG datasets)
      images = tf.reshape(images, ex["K"].shape[:2] + images.shape[1:])
    images, K, T = sl(images), sl(ex["K"]), sl(ex["T_cam_world"])
    uv, visible = sl(ex["uv"]), sl(ex["visible"])
    if "uv_pl" in ex:  # the dataset's own pseudo-labels (a real 2D detector)
      uv_pl, conf = sl(ex["uv_pl"]), sl(ex["conf"])
    else:
      uv_pl, conf = tf.numpy_function(pl_fn, [uv, visible, T, clip_id], [tf.float32, tf.float32])
    t, v, in_hw = images.shape[0], images.shape[1], tuple(images.shape[2:4])
    box = sl(ex["box"]) if "box" in ex else tf.fill([t, v, 4], float("nan"))
    uv_pl = tf.ensure_shape(uv_pl, [t, v, 21, 2])
    conf = tf.ensure_shape(conf, [t, v, 21])
    # Augmentation differs per draw (the position in the repeated, shuffled stream) and is
    # reproducible; evaluation uses no augmentation.
    aug_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    transforms, K2, T2, uv_pl2, uv2 = tf.numpy_function(
      lambda u, c, g, k, T, b, s: crops.geometry(u, c, g, k, T, b, in_hw, size, train, s.tolist()),
      [uv_pl, conf, uv, K, T, box, aug_seed],
      [tf.float32] * 5,
    )
    flat = tf.reshape(tf.cast(images, tf.float32) / 255.0, [t * v, *in_hw, 3])
    with_mask = masks and "hand_mask" in ex
    if with_mask:  # warped with the image (one resampling), thresholded after
      hm = tf.reshape(tf.cast(sl(ex["hand_mask"]), tf.float32), [t * v, *in_hw, 1])
      flat = tf.concat([flat, hm], -1)
    img = crops.warp(flat, tf.reshape(transforms, [t * v, 8]), size)
    if with_mask:
      img, hand_mask = img[..., :3], tf.cast(img[..., 3] > 0.5, tf.float32)
    if train:
      img = crops.colour_jitter(img, tf.cast(aug_seed, tf.int32))
    img = crops.normalise(img)
    out = {
      "images": tf.reshape(img, [t, v, size, size, 3]),
      "K": tf.ensure_shape(K2, [t, v, 3, 3]),
      "T_cam_world": tf.ensure_shape(T2, [t, v, 4, 4]),
      "uv_pl": tf.ensure_shape(uv_pl2, [t, v, 21, 2]),
      "conf": conf,
      "clip_id": clip_id,
      "mask": tf.constant(1.0),
    }
    if with_mask:
      out["hand_mask"] = tf.reshape(hand_mask, [t, v, size, size])
    if not train or supervised:
      out.update(xyz=ex["xyz"], uv=tf.ensure_shape(uv2, [t, v, 21, 2]), visible=visible)
      if "verts" in ex:  # ground-truth meshes stored by the dataset (real benchmarks)
        out["verts"] = ex["verts"]
        out["has_verts"] = ex.get("has_verts", tf.ones([t], tf.bool))
      elif "hand_pose" in ex:  # ground-truth meshes from the dataset's hand-model parameters
        if config.data.get("pose_labels", False):  # the parameters themselves (CycleHand)
          out.update({k: ex[k] for k in MANO_KEYS})
          out["betas"] = tf.ensure_shape(ex["betas"], [_synthetic_hand().num_betas])
        # Training batches with the parameters leave the mesh to the method (on device:
        # `methods.single_image.gt_vertices`); a hand forward pass here is a host JAX call that
        # waits for the training step on the same device.
        if not (train and config.data.get("pose_labels", False)):
          verts = tf.numpy_function(
            _synthetic_vertices, [ex[k] for k in MANO_KEYS], tf.float32, stateful=False
          )
          out["verts"] = tf.ensure_shape(verts, [t, _synthetic_hand().num_vertices, 3])
          out["has_verts"] = tf.ones([t], tf.bool)
    return out

  return fn


VIEW_KEYS = ("images", "K", "T_cam_world", "uv_pl", "conf", "uv", "visible", "hand_mask")
FRAME_KEYS = ("xyz", "verts", "has_verts", "hand_pose", "global_orient", "transl")


def _single_images(t: int, v: int):
  """A clip [t, v, ...] -> t * v examples of one frame and one view ([1, 1, ...]; per-frame
  keys [1, ...]), each with `image_id` = clip_id * t * v + frame * v + view."""

  def fn(ex):
    n = t * v
    out = {}
    for k, x in ex.items():
      if k in VIEW_KEYS:
        out[k] = tf.reshape(x, [n, 1, 1, *x.shape[2:]])
      elif k in FRAME_KEYS:
        out[k] = tf.repeat(x, v, axis=0)[:, None]
      else:  # per clip: clip_id, mask, betas
        out[k] = tf.repeat(x[None], n, axis=0)
    out["image_id"] = tf.cast(ex["clip_id"], tf.int64) * n + tf.range(n, dtype=tf.int64)
    return out

  return fn


def _labelled_filter(config, t: int):
  """(clip predicate, image predicate) keeping the labelled subset of single images
  (`data.labelled_only`; `subsets.labelled_mask`, the subset the losses read), or None when
  every image is kept."""
  frac = float(config.data.get("labelled_fraction", 1.0))
  if not config.data.get("labelled_only", False) or frac >= 1.0:
    return None
  seed, n = int(config.data.get("seed", 0)), t * config.data.views
  pick = lambda ids: subsets.labelled_mask(ids, frac, seed)

  # Plain TF ops: no AutoGraph conversion (it re-reads this file's source at run time).
  @tf.autograph.experimental.do_not_convert
  def clip(ex):
    ids = tf.cast(ex["clip_id"], tf.int64) * n + tf.range(n, dtype=tf.int64)
    return tf.reduce_any(tf.numpy_function(pick, [ids], tf.bool, stateful=False))

  @tf.autograph.experimental.do_not_convert
  def image(ex):
    one = tf.numpy_function(pick, [tf.reshape(ex["image_id"], [1])], tf.bool, stateful=False)
    return tf.reshape(one, [])

  return clip, image


def images_per_example(config) -> int:
  """Examples a stored clip becomes: t * v single images (`data.single_view`), or 1."""
  if not config.data.get("single_view", False):
    return 1
  t = _builder_or_error(config).info.features["K"].shape[0]
  return t * config.data.views


def _builder_or_error(config):
  try:
    builder = prepare.dataset_builder(config)
  except ValueError as e:
    raise DataError(str(e)) from None
  if not builder.is_prepared():
    raise DataError(
      f"dataset '{config.data.name}' ({builder.builder_config.name}) is not prepared in "
      f"{builder.data_dir}: run `python -m handflow.main --config=... --mode=prepare` first"
    )
  return builder


def _checked(config, iterable):
  """Iterates, turning TensorFlow's errors for a corrupt record or file into a DataError that
  names the dataset's directory."""
  it = iter(iterable)
  while True:
    # The yield stays outside the try: a generator closed at interpreter exit (a script that
    # stops reading) gets GeneratorExit there, and matching it against tf.errors, by then torn
    # down, printed an AttributeError.
    try:
      item = next(it)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      where = _builder_or_error(config).data_dir
      msg = str(e.message if hasattr(e, "message") else e).splitlines()[0]
      raise DataError(
        f"dataset '{config.data.name}' in {where} is corrupt or unreadable: {msg}"
      ) from None
    yield item


def base_split(split: str) -> str:
  """ "train[:95%]" -> "train": split names may carry TFDS slices (a validation set carved out
  of a dataset that ships none)."""
  return split.split("[", 1)[0]


def check_splits(config, *splits, labelled=True):
  """Fails before any work when the prepared dataset lacks a split a mode needs, or (with
  `labelled`) when one is a benchmark's unlabelled evaluation list."""
  builder = _builder_or_error(config)
  missing = [s for s in splits if base_split(s) not in builder.info.splits]
  if missing:
    raise DataError(
      f"dataset '{config.data.name}' ({builder.builder_config.name}) has no split "
      f"{', '.join(repr(s) for s in missing)} (it has {sorted(builder.info.splits)}); set "
      "config.data.train_split / eval_split / test_split (TFDS slices such as 'train[-5%:]' "
      "carve a validation set out of a split)"
    )
  if labelled:
    module = prepare.MANUAL_BUILDERS.get(config.data.name)
    bad = [s for s in splits if base_split(s) in getattr(module, "UNLABELLED_SPLITS", ())]
    if bad:
      raise DataError(
        f"dataset '{config.data.name}': split '{bad[0]}' has no labels (a benchmark's hidden "
        "evaluation list): it serves --mode=predict only; train, validate and report on "
        "labelled splits (config.data.train_split / eval_split / test_split)"
      )


def clip_records(config, split: str, keys) -> dict[int, dict]:
  """{clip_id: {key: value}} of a split's stored clips, images left undecoded: how predict
  maps its rows back to a benchmark's image list (sequence, frame ids, cameras). Text is str."""
  builder = _builder_or_error(config)
  keys = ("clip_id", *(k for k in keys if k != "clip_id"))
  decoders = tfds.decode.PartialDecoding({k: True for k in keys})
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  out = {}
  for ex in _checked(config, tfds.as_numpy(ds)):
    out[int(ex["clip_id"])] = {
      k: ex[k].decode() if isinstance(ex[k], bytes) else ex[k] for k in keys
    }
  return out


def _check_pseudo_labels(config, batch):
  """A real dataset built without any detector labels would train on nothing: say so."""
  builder = _builder_or_error(config)
  if "uv_pl" in builder.info.features and not np.any(batch["conf"] > 0):
    raise DataError(
      f"dataset '{config.data.name}': the first training batch has no pseudo-label (every "
      "`conf` is 0), so the build found no OpenPose files under rgb_2D_keypoints/ of "
      f"{config.data.get('manual_dir', '') or 'the download'}. Run `python -m "
      f"handflow.data.detect --dataset={config.data.name} --manual_dir=...`, then rebuild "
      f"(remove {builder.data_dir})"
    )


def make_dataset(config, split, *, train, process_index=0, process_count=1, seed=0, skip=0):
  """tf.data of single examples for this host (see the module docstring)."""
  builder = _builder_or_error(config)
  rig_views = builder.info.features["K"].shape[1]
  if config.data.views > rig_views:
    raise DataError(
      f"config.data.views = {config.data.views}, but dataset '{config.data.name}' has "
      f"{rig_views} views per clip"
    )
  if base_split(split) not in builder.info.splits:
    raise DataError(f"dataset '{config.data.name}' has no split '{split}'")
  host_split = tfds.even_splits(split, n=process_count)[process_index]
  read = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1) if train else None
  ds = builder.as_dataset(split=host_split, shuffle_files=train, read_config=read)
  single = config.data.get("single_view", False)
  t = builder.info.features["K"].shape[0]
  labelled = _labelled_filter(config, t) if train and single else None
  if labelled is not None:  # only the clips that hold a labelled image are read at all
    ds = ds.filter(labelled[0])
    if not any(True for _ in ds.take(1)):
      raise DataError(
        f"dataset '{config.data.name}' split '{split}': no image is in the labelled subset "
        f"(config.data.labelled_fraction = {config.data.labelled_fraction}); raise it"
      )
  if train:
    ds = ds.repeat().shuffle(max(16, 4 * config.batch_size), seed=seed)
  # Resuming skips examples before the (costly) map; the indices, hence augmentations, match an
  # uninterrupted run. Single images are skipped after the map (their clips are shuffled apart).
  clip_skip = 0 if single else skip
  ds = (
    ds.skip(clip_skip)
    .enumerate(start=clip_skip)
    .map(
      _example_fn(config, split, train, seed),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
  )
  if single:
    ds = ds.map(_single_images(t, config.data.views)).unbatch()
    if labelled is not None:
      ds = ds.filter(labelled[1])
    if train:  # images of one clip apart (contrastive negatives, batch statistics)
      ds = ds.shuffle(max(64, 8 * config.batch_size), seed=seed + 1).skip(skip)
  return ds


def batches(
  config, split, *, train, process_index=0, process_count=1, seed=0, batch_size=None, start_step=0
):
  """NumPy batches [b, t, v, ...] for this host; evaluation: one padded pass, equal step counts
  on every host (ready for jax.make_array_from_process_local_data). Training starts at
  `start_step` (the data position of a restored checkpoint) with the batches an uninterrupted
  run would see there."""
  b = batch_size or max(1, config.batch_size // process_count)
  ds = make_dataset(
    config,
    split,
    train=train,
    process_index=process_index,
    process_count=process_count,
    seed=seed,
    skip=start_step * b if train else 0,
  )
  if train:
    it = _checked(
      config, tfds.as_numpy(ds.batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    )
    first = next(it)
    _check_pseudo_labels(config, first)
    yield first
    yield from it
    return
  total = _builder_or_error(config).info.splits[split].num_examples * images_per_example(config)
  steps = int(np.ceil(int(np.ceil(total / process_count)) / b))  # same on every host
  zeros = {
    k: np.zeros((0,) + tuple(spec.shape), spec.dtype.as_numpy_dtype)
    for k, spec in ds.element_spec.items()
  }
  it = _checked(config, tfds.as_numpy(ds.batch(b).prefetch(tf.data.AUTOTUNE)))
  for _ in range(steps):
    batch = next(it, zeros)
    pad = b - len(batch["mask"])
    if pad:
      batch = {
        k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()
      }
    yield batch
