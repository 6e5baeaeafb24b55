"""What every experiment config shares: data, hand model, loop, optimiser, checkpoints, splits.

A method's config calls `base(arg, **its_arg_keys)` and adds its own `model`, `loss` and
`evaluators` (see configs/ust.py, configs/keypoints2d.py). Variants set data and loop sizes
here; the method's file sizes its model per variant.

Variants: default (synthetic data sized for a 2-core CPU), tiny (tests), hanco, dexycb, ho3d
(real data from config.data.manual_dir; paper-scale loop). Arg keys shared by every method:
views, frames (0 keeps the variant's), labels (the simulated detector's preset).

Splits: training reads `data.train_split`, training-time evaluation `data.eval_split`
(validation: model choices are made there), the final report and predict `data.test_split`,
once. Datasets without a validation split carve one out of train with TFDS slices.
"""

import ml_collections
from ml_collections import config_dict

from handflow import config_arg

VARIANTS = ("default", "tiny", "hanco", "dexycb", "ho3d")
REAL = ("hanco", "dexycb", "ho3d")
DETECTOR_KEYS = (
  "noise", "occluded_scale", "outlier_rate", "jump", "swap_rate", "flip_rate", "missing_rate",
  "view_miss_rate", "event_rate", "cone_deg", "persist", "confident_rate", "conf_noise",
)  # fmt: skip


def base(arg, variants=VARIANTS, **method_args):
  """(config, parsed arg) with everything but the method's model, losses and evaluators.
  `variants`: the ones the method's config accepts (the first is the default)."""
  arg = config_arg.parse(arg, variants=variants, views=0, frames=0, labels="", **method_args)
  c = ml_collections.ConfigDict()
  c.method = ""
  c.variant = arg.variant
  c.seed = 0

  # The hand model: "open" (shipped, CC0) or a path to MANO_{RIGHT,LEFT}.pkl.
  c.hand = ml_collections.ConfigDict()
  c.hand.model = "open"
  c.hand.side = "right"
  c.hand.convention = "openpose"
  c.hand.flat_hand_mean = True

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_hands"
  c.data.data_dir = ""  # TFDS data dir; empty: $TFDS_DATA_DIR or TFDS's default.
  c.data.manual_dir = ""  # real datasets: where the user unpacked them.
  c.data.subset = False  # real datasets: allow fewer files than the official release
  c.data.mano_dir = ""  # real datasets: MANO_{RIGHT,LEFT}.pkl's folder (ground-truth meshes)
  c.data.setup = "s0"  # dexycb: the toolkit's setup, s0-s3
  c.data.hands = "both"  # dexycb: "both" or "right" (UST-Hand fits a right MANO hand)
  c.data.version = 3  # ho3d: 2 or 3
  c.data.train_split = "train"
  c.data.eval_split = "validation"  # training-time evaluation (never the test split)
  c.data.test_split = "test"  # the final report, scored once
  c.data.views = 8  # views the model uses (<= the dataset's)
  c.data.rig_views = 8  # synthetic_hands: cameras in the generated rig
  c.data.frames = 4
  c.data.image_size = 128  # the dataset's images (synthetic_hands: rendered at this size)
  c.data.crop_size = 64  # the network's input crop (0: the dataset's image size)
  # synthetic_hands only: clips per split, occluders, poses, generation seed.
  c.data.clips = ml_collections.ConfigDict({"train": 400, "validation": 40, "test": 80})
  c.data.occluder_rate = 0.15
  c.data.pose_prior = "independent"  # or "synergy" (synthetic.random_pose)
  c.data.seed = 0
  # 2D pseudo-labels of datasets that ship none: the simulated detector
  # (handflow.data.pseudo_labels), a preset (clean, iid, default, hard, mediapipe; arg key
  # `labels`) with any of its keys set over it (None keeps the preset's value).
  c.data.pseudo_labels = ml_collections.ConfigDict(
    {"source": "simulated", "preset": arg.labels or "default"}
  )
  for name in DETECTOR_KEYS:
    c.data.pseudo_labels[name] = config_dict.placeholder(float)
  c.data.supervised = False  # True lets training read ground truth (supervised baselines only)

  c.batch_size = 4  # clips (x frames x views images)
  c.num_steps = 800
  # handflow.optim: schedule, weight decay, parameter groups (patterns match a leaf's path,
  # e.g. "hypothesis_net/params/backbone/.*", or the method's label for it).
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.learning_rate = 3e-4
  c.optim.weight_decay = 1e-4
  c.optim.no_decay = ()  # patterns kept out of weight decay (besides biases and norm scales)
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 100
  c.optim.end_factor = 0.01
  c.optim.grad_clip = 1.0
  c.optim.lr_mults = ()  # [(pattern, multiplier)]: first match wins; 0 freezes
  c.optim.frozen = ()  # patterns of leaves that never move (no optimiser state)
  c.optim.layer_decay = ml_collections.ConfigDict(
    {
      "rate": 1.0,
      "num_layers": 0,
      "layer": r"blocks_(\d+)",
      "embed": r"(embed|pos_|cls|mask_token)",
    }
  )
  c.optim.ema_decay = 0.0  # > 0 keeps an EMA of the parameters (evaluated and exported)

  # Training loop (handflow.train).
  c.mesh = ml_collections.ConfigDict({"data": -1})  # add {"model": n} for model parallelism
  c.param_sharding = "replicated"  # or "fsdp"
  c.log_every = 50
  c.eval_every = 200  # on data.eval_split
  c.max_nonfinite = 10  # stop after this many non-finite steps in a row
  c.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3})
  c.tensorboard = True
  c.resume = ""  # a run or checkpoint directory to continue from when the workdir has none
  # Keys (or prefixes, "*" for any) a command may change in a workdir that holds a trained run,
  # e.g. "num_steps"; other changes to the model, data or training are refused
  # (handflow.workdir).
  c.allow_changes = ""
  # Fine-tuning: parameters of another run (perhaps another model; handflow.finetune).
  c.init_from = ml_collections.ConfigDict(
    {
      "workdir": "",  # a run or checkpoint directory; empty: no fine-tuning
      "step": -1,  # -1: the newest checkpoint
      "tree": "params",  # which saved tree: "params" or e.g. "extra/teacher"
      "dont_load": (),  # patterns of this model's leaves left at their initial values
      "rename": (),  # [(pattern, replacement)]: this model's path -> the checkpoint's
    }
  )
  c.compute_dtype = "float32"  # "bfloat16" on TPU
  # --mode=predict's files besides the npz (handflow.exports): OBJ meshes (-1: every test
  # frame) and overlay PNGs (samples).
  c.predict = ml_collections.ConfigDict({"meshes": -1, "overlays": 8})
  c.profile = ml_collections.ConfigDict({"start": -1, "steps": 0})  # a trace of steps [s, s+n)

  if arg.variant == "tiny":
    c.data.views, c.data.rig_views, c.data.frames, c.data.image_size = 2, 2, 2, 32
    c.data.crop_size = 0
    c.data.clips = ml_collections.ConfigDict({"train": 4, "validation": 2, "test": 2})
    c.batch_size, c.num_steps = 8, 4  # 8: one clip per fake test device
    c.optim.warmup_steps, c.log_every, c.eval_every = 1, 1, 0
    c.checkpoint.every = 4  # one save per test run (saving costs seconds on a CPU)
  elif arg.variant in REAL:
    c.data.name = arg.variant
    c.data.image_size = {"hanco": 224, "dexycb": 480, "ho3d": 480}[arg.variant]
    c.data.crop_size = 256
    c.batch_size, c.num_steps = 8, 50_000
    c.compute_dtype = "bfloat16"
    c.data.views = {"hanco": 8, "dexycb": 8, "ho3d": 5}[arg.variant]
    c.data.hands = "right"
    if arg.variant in ("hanco", "ho3d"):  # no validation split is shipped: hold out train's tail
      c.data.train_split, c.data.eval_split = "train[:-5%]", "train[-5%:]"
  # Explicit arg keys win over the variant's choices (0 keeps the variant's).
  if arg.views:
    c.data.views = arg.views
  if arg.frames:
    c.data.frames = arg.frames
  return c, arg
