"""A simulated off-the-shelf 2D hand detector: noisy pseudo-labels with confidences.

  labels = simulate(uv_gt [..., v, 21, 2], visible [..., v, 21], config, key=(seed, example_id))

Per keypoint and view, in order:
- Gaussian jitter with std `noise` x the hand's size in that view (its 2D bounding-box
  diagonal), `occluded_scale` times larger for occluded keypoints;
- with probability `swap_rate` per view, two neighbouring fingers (index-middle, middle-ring or
  ring-pinky) exchange their chains; with `flip_rate`, thumb and pinky exchange theirs (the
  left/right confusion of real detectors);
- with probability `outlier_rate` per keypoint, a jump to a random point of the hand's
  neighbourhood (up to `jump` hand sizes away);
- with probability `missing_rate` per keypoint (times `occluded_scale` when occluded), no
  detection: confidence 0 and uv = 0;
- confidences decrease with the actual error (plus their own noise), as real detectors' do, so
  weighting by confidence helps; they are in (0, 1].
Deterministic per example (NumPy's PCG64 seeded with `key`). Keypoints in OpenPose order. Ground
truth is only read here, to corrupt it: training code receives the output, never uv_gt.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# OpenPose order: finger chains (MCP, PIP, DIP, tip) of thumb, index, middle, ring, pinky.
FINGERS = {
  name: list(range(1 + 4 * i, 5 + 4 * i))
  for i, name in enumerate(("thumb", "index", "middle", "ring", "pinky"))
}
NEIGHBOURS = (("index", "middle"), ("middle", "ring"), ("ring", "pinky"))


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  noise: float = 0.02  # jitter std, fraction of the hand's 2D size
  occluded_scale: float = 3.0  # noise and missing-rate multiplier for occluded keypoints
  outlier_rate: float = 0.03  # per keypoint: jump
  jump: float = 0.5  # jump distance scale, in hand sizes
  swap_rate: float = 0.02  # per view: neighbouring fingers exchanged
  flip_rate: float = 0.01  # per view: thumb and pinky exchanged
  missing_rate: float = 0.02  # per keypoint: no detection
  conf_noise: float = 0.5  # std of the confidence logit's own noise

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if v < 0:
        raise ValueError(f"pseudo-label config '{f.name}' must be >= 0, got {v}")
    for f in ("outlier_rate", "swap_rate", "flip_rate", "missing_rate"):
      if getattr(self, f) > 1:
        raise ValueError(f"pseudo-label config '{f}' is a probability, got {getattr(self, f)}")


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
  uv: np.ndarray  # [..., v, 21, 2] pixels (0 where missing)
  confidence: np.ndarray  # [..., v, 21] in [0, 1], 0 where missing
  # What was done, for tests and analysis (not for training):
  is_outlier: np.ndarray  # [..., v, 21] jumped, swapped or flipped
  is_missing: np.ndarray  # [..., v, 21]


def hand_size_px(uv):
  """Diagonal of the 2D bounding box of the keypoints [..., 21, 2] -> [...]."""
  return np.linalg.norm(uv.max(-2) - uv.min(-2), axis=-1)


def _exchange(uv, a, b, where):
  """Swaps keypoint chains a and b (index lists) in the detections where `where` [...] is set."""
  perm = np.arange(21)
  perm[a], perm[b] = b, a
  return np.where(where[..., None, None], uv[..., perm, :], uv)


def simulate(uv_gt, visible, config: DetectorConfig = DetectorConfig(), key=(0, 0)) -> PseudoLabels:
  """Pseudo-labels for ground-truth keypoints uv_gt [..., 21, 2] (pixels) and visibility
  [..., 21] (bool); every leading index is one detection (one view of one frame)."""
  uv_gt = np.asarray(uv_gt, np.float64)
  visible = np.asarray(visible, bool)
  if uv_gt.shape[-2:] != (21, 2):
    raise ValueError(f"pseudo-labels need keypoints [..., 21, 2], got {uv_gt.shape}")
  if visible.shape != uv_gt.shape[:-1]:
    raise ValueError(f"visibility {visible.shape} does not match keypoints {uv_gt.shape}")
  c = config
  rng = np.random.default_rng(list(np.atleast_1d(np.asarray(key, np.int64)).tolist()))
  lead = uv_gt.shape[:-2]
  size = np.maximum(hand_size_px(uv_gt), 1.0)[..., None, None]  # [..., 1, 1]
  std = c.noise * np.where(visible, 1.0, c.occluded_scale)[..., None]
  uv = uv_gt + rng.normal(size=uv_gt.shape) * std * size
  outlier = np.zeros(uv_gt.shape[:-1], bool)

  swap = rng.random(lead) < c.swap_rate
  which = rng.integers(0, len(NEIGHBOURS), lead)
  for i, (a, b) in enumerate(NEIGHBOURS):
    sel = swap & (which == i)
    uv = _exchange(uv, FINGERS[a], FINGERS[b], sel)
    outlier[sel, ...] |= np.isin(np.arange(21), FINGERS[a] + FINGERS[b])
  flip = rng.random(lead) < c.flip_rate
  uv = _exchange(uv, FINGERS["thumb"], FINGERS["pinky"], flip)
  outlier[flip, ...] |= np.isin(np.arange(21), FINGERS["thumb"] + FINGERS["pinky"])

  jump = rng.random(uv_gt.shape[:-1]) < c.outlier_rate
  direction = rng.normal(size=uv_gt.shape)
  direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-9)
  dist = rng.uniform(0.1, 1.0, uv_gt.shape[:-1] + (1,)) * c.jump * size
  uv = np.where(jump[..., None], uv + direction * dist, uv)
  outlier |= jump

  p_miss = np.clip(c.missing_rate * np.where(visible, 1.0, c.occluded_scale), 0.0, 1.0)
  missing = rng.random(uv_gt.shape[:-1]) < p_miss

  # Confidence: falls with the error relative to the configured noise level.
  err = np.linalg.norm(uv - uv_gt, axis=-1) / (size[..., 0] * max(c.noise, 1e-3))
  logit = 3.0 - 1.2 * err + rng.normal(size=err.shape) * c.conf_noise
  conf = 0.5 * (1.0 + np.tanh(0.5 * logit))  # a sigmoid that cannot overflow
  conf = np.where(missing, 0.0, conf)
  uv = np.where(missing[..., None], 0.0, uv)
  return PseudoLabels(uv.astype(np.float32), conf.astype(np.float32), outlier & ~missing, missing)
