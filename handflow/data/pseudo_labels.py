"""A simulated off-the-shelf 2D hand detector: noisy pseudo-labels with confidences.

  labels = simulate(uv_gt [t, v, 21, 2], visible [t, v, 21], config, key=(seed, clip),
                    view_axes=[v, 3])

Real detectors (MediaPipe, OpenPose) fail in structured ways: a finger swap or a mirrored hand
is seen from neighbouring cameras alike and lasts for several frames, and the detector is often
confident when it is wrong. Robust triangulation out-votes i.i.d. failures of single views; it
does not out-vote coherent ones. So, per keypoint and view:

- Gaussian jitter with std `noise` x the hand's size in that view (its 2D bounding-box
  diagonal), `occluded_scale` times larger for occluded keypoints;
- i.i.d. per detection: with `swap_rate` two neighbouring fingers (index-middle, middle-ring,
  ring-pinky) exchange their chains; with `flip_rate` thumb and pinky exchange theirs;
- **coherent failure events** (clips [t, v, ...] only): each (frame, view) starts an event with
  probability `event_rate`; the event hits every view whose optical axis is within `cone_deg`
  of the starting view's (`view_axes`; without them, that view alone) and lasts 1 + a geometric
  number of frames with mean `persist`. Its kind is drawn from `EVENTS`: a neighbouring-finger
  swap, a thumb/pinky flip, a mirrored hand (reflected about the wrist -> middle-MCP line, the
  wrong-handedness failure) or a finger jumping onto its neighbour;
- with probability `outlier_rate` per keypoint, a jump to a random point of the hand's
  neighbourhood (up to `jump` hand sizes away);
- with probability `missing_rate` per keypoint (times `occluded_scale` when occluded), and
  `view_miss_rate` per whole detection, no detection: confidence 0 and uv = 0;
- confidences fall with the error (plus their own noise), except that a failed keypoint is
  **confidently wrong** with probability `confident_rate`: its confidence is drawn as an
  inlier's. They are in (0, 1].

`PRESETS` name detector levels from clean to hard, and one calibrated to MediaPipe on the same
renders (`MEDIAPIPE_MEASURED`; `python -m handflow.data.label_stats` prints both). Deterministic
per key (NumPy's PCG64). Keypoints in OpenPose order. Ground truth is only read here, to corrupt
it: training code receives the output, never uv_gt.
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
# Coherent event kinds and their probabilities.
EVENTS = {"swap": 0.35, "flip": 0.2, "mirror": 0.2, "finger_jump": 0.25}


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  noise: float = 0.02  # jitter std, fraction of the hand's 2D size
  occluded_scale: float = 3.0  # noise and missing-rate multiplier for occluded keypoints
  outlier_rate: float = 0.02  # per keypoint: jump
  jump: float = 0.5  # jump distance scale, in hand sizes
  swap_rate: float = 0.01  # per detection: neighbouring fingers exchanged
  flip_rate: float = 0.005  # per detection: thumb and pinky exchanged
  missing_rate: float = 0.02  # per keypoint: no detection
  view_miss_rate: float = 0.03  # per detection: the hand is not found
  event_rate: float = 0.03  # per (frame, view): a coherent failure event starts
  cone_deg: float = 60.0  # events hit the views within this angle of the first
  persist: float = 2.0  # mean extra frames an event lasts
  confident_rate: float = 0.3  # a failed keypoint keeps an inlier's confidence
  conf_noise: float = 0.5  # std of the confidence logit's own noise

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not np.isfinite(v) or v < 0:
        raise ValueError(f"pseudo-label config '{f.name}' must be a number >= 0, got {v}")
    for f in PROBABILITIES:
      if getattr(self, f) > 1:
        raise ValueError(f"pseudo-label config '{f}' is a probability, got {getattr(self, f)}")


PROBABILITIES = (
  "outlier_rate", "swap_rate", "flip_rate", "missing_rate", "view_miss_rate", "event_rate",
  "confident_rate",
)  # fmt: skip
_NONE = dict(
  outlier_rate=0.0, swap_rate=0.0, flip_rate=0.0, missing_rate=0.0, view_miss_rate=0.0,
  event_rate=0.0, confident_rate=0.0,
)  # fmt: skip
PRESETS = {
  "clean": dict(_NONE, noise=0.01),
  # i.i.d. failures only (the detector before the structured events): the old default.
  "iid": dict(_NONE, noise=0.02, outlier_rate=0.03, swap_rate=0.02, flip_rate=0.01,
              missing_rate=0.02),
  "default": {},
  "hard": dict(noise=0.035, outlier_rate=0.05, swap_rate=0.03, flip_rate=0.02,
               missing_rate=0.04, view_miss_rate=0.1, event_rate=0.07, cone_deg=75.0,
               persist=3.0, confident_rate=0.5),
  # Calibrated to MEDIAPIPE_MEASURED on synthetic_hands' 128^2 renders (see label_stats).
  "mediapipe": dict(noise=0.03, outlier_rate=0.08, swap_rate=0.03, flip_rate=0.04,
                    missing_rate=0.0, view_miss_rate=0.54, event_rate=0.08, cone_deg=60.0,
                    persist=2.0, confident_rate=0.8, conf_noise=0.3),
}  # fmt: skip
# MediaPipe's hand landmarker (mediapipe 0.10.21, static images) on 320 test views of
# synthetic_hands (128^2 renders upsampled x2 and padded), as measured in issue 13; pixels of
# the 128^2 render.
MEDIAPIPE_MEASURED = {
  "detected": 0.46,
  "err_mean_px": 9.9,
  "err_median_px": 5.5,
  "err_p90_px": 24.8,
  "frac_over_20px": 0.13,
  "wrong_handedness": 0.16,
}


SOURCES = ("simulated", "mediapipe")


def preset(name: str, **overrides) -> DetectorConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown pseudo-label preset '{name}'; known: {sorted(PRESETS)}")
  return DetectorConfig(**{**PRESETS[name], **overrides})


def from_config(pl) -> DetectorConfig:
  """`config.data.pseudo_labels` (a ConfigDict or dict): `preset` and any DetectorConfig keys
  set over it (None keeps the preset's value); `source` is read by the caller."""
  pl = dict(pl.to_dict() if hasattr(pl, "to_dict") else (pl or {}))
  name = pl.pop("preset", "default")
  source = pl.pop("source", "simulated")
  if source not in SOURCES:
    raise ValueError(f"config data.pseudo_labels.source='{source}': known: {list(SOURCES)}")
  unknown = set(pl) - {f.name for f in dataclasses.fields(DetectorConfig)}
  if unknown:
    raise ValueError(f"unknown config keys data.pseudo_labels.{sorted(unknown)}")
  return preset(name, **{k: v for k, v in pl.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
  uv: np.ndarray  # [..., v, 21, 2] pixels (0 where missing)
  confidence: np.ndarray  # [..., v, 21] in [0, 1], 0 where missing
  # What was done, for tests and analysis (not for training):
  is_outlier: np.ndarray  # [..., v, 21] jumped, swapped, flipped, mirrored
  is_missing: np.ndarray  # [..., v, 21]
  event: np.ndarray  # [...] the coherent event kind per detection (0: none, i: EVENTS' i-th)


def simulate_clip(uv_gt, visible, T_cam_world, config: DetectorConfig, key) -> PseudoLabels:
  """One dataset clip (uv [t, v, 21, 2], visible [t, v, 21], T_cam_world [t, v, 4, 4]): coherent
  failures spread over views whose optical axes (world, first frame) are close."""
  axes = np.asarray(T_cam_world)[0, :, 2, :3]
  return simulate(uv_gt, visible, config, key=key, view_axes=axes)


def hand_size_px(uv):
  """Diagonal of the 2D bounding box of the keypoints [..., 21, 2] -> [...]."""
  return np.linalg.norm(uv.max(-2) - uv.min(-2), axis=-1)


def _exchange(uv, a, b, where):
  """Swaps keypoint chains a and b (index lists) in the detections where `where` [...] is set."""
  perm = np.arange(21)
  perm[a], perm[b] = b, a
  return np.where(where[..., None, None], uv[..., perm, :], uv)


def _copy_chain(uv, src, dst, where):
  """Chain dst takes chain src's positions (a finger detected on its neighbour)."""
  perm = np.arange(21)
  perm[dst] = src
  return np.where(where[..., None, None], uv[..., perm, :], uv)


def _mirror(uv, where):
  """The hand reflected about its wrist -> middle-MCP line (a left hand for a right one)."""
  a = uv[..., :1, :]
  d = uv[..., 9:10, :] - a
  d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
  rel = uv - a
  refl = a + 2.0 * np.sum(rel * d, -1, keepdims=True) * d - rel
  return np.where(where[..., None, None], refl, uv)


def _chain_mask(*names):
  return np.isin(np.arange(21), sum((FINGERS[n] for n in names), []))


def event_map(rng, t, v, config: DetectorConfig, view_axes=None):
  """Coherent events of one clip: (kind [t, v] (0 none, else 1 + index into EVENTS), variant
  [t, v] (which neighbouring pair or finger))."""
  kind = np.zeros((t, v), np.int64)
  variant = np.zeros((t, v), np.int64)
  if view_axes is None:
    near = np.eye(v, dtype=bool)
  else:
    ax = np.asarray(view_axes, np.float64)
    ax = ax / np.maximum(np.linalg.norm(ax, axis=-1, keepdims=True), 1e-9)
    near = ax @ ax.T >= np.cos(np.deg2rad(config.cone_deg)) - 1e-9
  onsets = np.argwhere(rng.random((t, v)) < config.event_rate)
  probs = np.asarray(list(EVENTS.values()))
  for f, s in onsets:
    k = 1 + rng.choice(len(EVENTS), p=probs / probs.sum())
    which = rng.integers(0, len(NEIGHBOURS))
    length = 1 + (rng.geometric(1.0 / (1.0 + config.persist)) - 1 if config.persist > 0 else 0)
    frames = slice(f, min(t, f + length))
    views = near[s]
    free = kind[frames][:, views] == 0  # an ongoing event keeps its views
    kind[frames, views] = np.where(free, k, kind[frames][:, views])
    variant[frames, views] = np.where(free, which, variant[frames][:, views])
  return kind, variant


def _apply_events(uv, outlier, kind, variant):
  names = list(EVENTS)
  for i, (a, b) in enumerate(NEIGHBOURS):
    sel = (kind == 1 + names.index("swap")) & (variant == i)
    uv = _exchange(uv, FINGERS[a], FINGERS[b], sel)
    outlier[sel] |= _chain_mask(a, b)
    sel = (kind == 1 + names.index("finger_jump")) & (variant == i)
    uv = _copy_chain(uv, FINGERS[a], FINGERS[b], sel)
    outlier[sel] |= _chain_mask(b)
  sel = kind == 1 + names.index("flip")
  uv = _exchange(uv, FINGERS["thumb"], FINGERS["pinky"], sel)
  outlier[sel] |= _chain_mask("thumb", "pinky")
  sel = kind == 1 + names.index("mirror")
  uv = _mirror(uv, sel)
  outlier[sel] |= np.arange(21) != 0
  return uv, outlier


def simulate(
  uv_gt, visible, config: DetectorConfig = DetectorConfig(), key=(0, 0), view_axes=None
) -> PseudoLabels:
  """Pseudo-labels for ground-truth keypoints uv_gt [..., 21, 2] (pixels) and visibility
  [..., 21] (bool). Every leading index is one detection; with at least two leading axes they
  are read as a clip [t, v, 21, 2] (frames, views) and coherent events apply, spread over the
  views whose optical axes `view_axes [v, 3]` (world) lie within the config's cone."""
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
    outlier[sel, ...] |= _chain_mask(a, b)
  flip = rng.random(lead) < c.flip_rate
  uv = _exchange(uv, FINGERS["thumb"], FINGERS["pinky"], flip)
  outlier[flip, ...] |= _chain_mask("thumb", "pinky")

  kind = np.zeros(lead, np.int64)
  if len(lead) >= 2 and c.event_rate > 0:
    t, v = lead[-2:]
    if view_axes is not None and np.shape(view_axes) != (v, 3):
      raise ValueError(f"view_axes must be [v={v}, 3], got {np.shape(view_axes)}")
    rest = int(np.prod(lead[:-2], dtype=np.int64))
    kinds, variants = zip(*(event_map(rng, t, v, c, view_axes) for _ in range(rest)), strict=True)
    kind = np.stack(kinds).reshape(lead)
    uv, outlier = _apply_events(uv, outlier, kind, np.stack(variants).reshape(lead))

  jump = rng.random(uv_gt.shape[:-1]) < c.outlier_rate
  direction = rng.normal(size=uv_gt.shape)
  direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-9)
  dist = rng.uniform(0.1, 1.0, uv_gt.shape[:-1] + (1,)) * c.jump * size
  uv = np.where(jump[..., None], uv + direction * dist, uv)
  outlier |= jump

  p_miss = np.clip(c.missing_rate * np.where(visible, 1.0, c.occluded_scale), 0.0, 1.0)
  missing = rng.random(uv_gt.shape[:-1]) < p_miss
  missing |= (rng.random(lead) < c.view_miss_rate)[..., None]

  # Confidence: falls with the error relative to the configured noise level, unless the
  # detector is confidently wrong (then an inlier's error level is drawn instead).
  err = np.linalg.norm(uv - uv_gt, axis=-1) / (size[..., 0] * max(c.noise, 1e-3))
  confident = outlier & (rng.random(err.shape) < c.confident_rate)
  err = np.where(confident, np.abs(rng.normal(size=err.shape)) * 1.2, err)
  logit = 3.0 - 1.2 * err + rng.normal(size=err.shape) * c.conf_noise
  conf = 0.5 * (1.0 + np.tanh(0.5 * logit))  # a sigmoid that cannot overflow
  conf = np.where(missing, 0.0, conf)
  uv = np.where(missing[..., None], 0.0, uv)
  return PseudoLabels(
    uv.astype(np.float32), conf.astype(np.float32), outlier & ~missing, missing, kind
  )
