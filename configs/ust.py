"""UST-Hand: self-supervised 3D hand pose and mesh from multi-view video and 2D pseudo-labels.

Local (2-core CPU, embedded synthetic data):
  python -m handflow.main --config=configs/ust.py --workdir=/tmp/handflow/ust
A variant and overrides:
  python -m handflow.main --config=configs/ust.py:tiny --workdir=/tmp/handflow/tiny
  python -m handflow.main --config=configs/ust.py:hanco,K=32 --workdir=gs://BUCKET/ust_hanco \\
    --config.hand.model=/data/mano/MANO_RIGHT.pkl
On a TPU pod, the same command runs on every worker (see launch/ and the README).

Variants: default (synthetic data sized for a 2-core CPU), tiny (tests), hanco, dexycb, ho3d
(paper-scale: ResNet-50, 256x256 crops, 8 views; the prior method's optimiser settings).
Arg keys: K (hypotheses per joint per view), views, frames, flow (False: deterministic 2D head),
temporal (False: no temporal attention).
"""

import ml_collections

from handflow import config_arg

VARIANTS = ("default", "tiny", "hanco", "dexycb", "ho3d")


def get_config(arg=None):
  arg = config_arg.parse(arg, variants=VARIANTS, K=0, views=0, frames=0, flow=True, temporal=True)
  c = ml_collections.ConfigDict()
  c.method = "ust"
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
  c.data.views = 8  # views the model uses (<= the dataset's)
  c.data.rig_views = 8  # synthetic_hands: cameras in the generated rig
  c.data.frames = 4
  c.data.image_size = 128  # the dataset's images (synthetic_hands: rendered at this size)
  c.data.crop_size = 64  # the network's input crop (0: the dataset's image size)
  # synthetic_hands only: clips per split, occluders, generation seed.
  c.data.clips = ml_collections.ConfigDict({"train": 400, "validation": 40, "test": 80})
  c.data.occluder_rate = 0.15
  c.data.seed = 0
  # The simulated 2D detector (handflow.data.pseudo_labels.DetectorConfig): sweep these.
  c.data.pseudo_labels = ml_collections.ConfigDict(
    {
      "noise": 0.02,
      "outlier_rate": 0.03,
      "swap_rate": 0.02,
      "flip_rate": 0.01,
      "missing_rate": 0.02,
      "occluded_scale": 3.0,
    }
  )
  c.data.supervised = False  # True lets training read ground truth (supervised baselines only)

  # handflow.models.ust: stage 1 (ResNet + per-joint heads + flow), stage 2 (point transformer).
  c.model = ml_collections.ConfigDict()
  c.model.backbone_depth = 10  # 10, 18, 34 or 50
  c.model.backbone_width = 32  # channels of the first stage (64 in the standard ResNet)
  c.model.feature_stride = 4  # output stride of the feature pyramid (heatmaps, sampling)
  c.model.feature_dim = 64
  c.model.joint_dim = 64
  c.model.flow = arg.flow  # False: the deterministic 2D head (ablation)
  c.model.flow_layers = 6  # masked couplings (RLE: 3 x 2)
  c.model.flow_hidden = 32
  c.model.num_hypotheses = 16  # K per joint per view (the point cloud has K + 1 per joint)
  c.model.point_dim = 64
  c.model.feature_grad = True  # stage 2's losses train the backbone through sampled features
  c.model.spatial_layers = 1
  c.model.joint_layers = 2
  c.model.heads = 4
  c.model.temporal_attention = arg.temporal

  # Loss weights (handflow.methods.ust.LOSS_TERMS); every term is logged as loss/<name>.
  c.loss = ml_collections.ConfigDict(
    {
      "heatmap": 1.0,  # stage-1 heatmaps vs Gaussians at the pseudo-labels (cross-entropy)
      "nll": 1.0,  # flow NLL of the pseudo-labels (nats per joint)
      "reproj_refined": 1.0,  # stage 2's refined joints (the mesh sits on them) vs pseudo-labels
      "reproj": 1.0,  # final (MANO) keypoints vs pseudo-labels in every view
      "to_fused": 0.1,  # stage-1 mu -> projection of the fused result
      "to_views": 0.5,  # projection of the fused result -> stage-1 mu (certainty-weighted)
      "shape": 1e-3,
      "pose": 1e-3,
      "limits": 1.0,
      "smooth": 1.0,
      "bones": 10.0,
    }
  )

  c.batch_size = 4  # clips (x frames x views images)
  c.num_steps = 800
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.learning_rate = 3e-4
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 100
  c.optim.end_factor = 0.01
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.0  # > 0 keeps an EMA of the parameters

  # Training loop (handflow.train).
  c.mesh = ml_collections.ConfigDict({"data": -1})  # add {"model": n} for model parallelism
  c.param_sharding = "replicated"  # or "fsdp"
  c.log_every = 50
  c.eval_every = 200
  c.max_nonfinite = 10  # stop after this many non-finite steps in a row
  c.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3})
  c.tensorboard = True
  c.resume = ""  # a checkpoint directory to continue from when the workdir has none
  c.init_from = ""  # a checkpoint directory to take parameters from (fine-tuning)
  c.compute_dtype = "float32"  # "bfloat16" on TPU
  c.profile = ml_collections.ConfigDict({"start": -1, "steps": 0})  # a trace of steps [s, s+n)

  if arg.variant == "default":
    # From scratch on a CPU budget: a higher learning rate than the prior method's 3e-4.
    c.optim.learning_rate, c.optim.warmup_steps = 2e-3, 30
  if arg.variant == "tiny":
    c.data.views, c.data.rig_views, c.data.frames, c.data.image_size = 2, 2, 2, 32
    c.data.crop_size = 0
    c.data.clips = ml_collections.ConfigDict({"train": 4, "validation": 2, "test": 2})
    c.model.backbone_depth, c.model.backbone_width, c.model.num_hypotheses = 10, 8, 4
    c.model.feature_dim = c.model.joint_dim = c.model.point_dim = 16
    c.model.flow_hidden, c.model.joint_layers, c.model.heads = 8, 1, 2
    c.batch_size, c.num_steps = 8, 4  # 8: one clip per fake test device
    c.optim.warmup_steps, c.log_every, c.eval_every = 1, 1, 0
    c.checkpoint.every = 2
  elif arg.variant in ("hanco", "dexycb", "ho3d"):
    c.data.name = arg.variant
    c.data.image_size = {"hanco": 224, "dexycb": 480, "ho3d": 480}[arg.variant]
    c.data.crop_size = 256
    c.model.backbone_depth, c.model.backbone_width = 50, 64
    c.batch_size, c.num_steps = 8, 50_000
    c.compute_dtype = "bfloat16"
    c.data.views = {"hanco": 8, "dexycb": 8, "ho3d": 5}[arg.variant]
    c.data.hands = "right"
  # Explicit arg keys win over the variant's choices (0 keeps the variant's).
  if arg.K:
    c.model.num_hypotheses = arg.K
  if arg.views:
    c.data.views = arg.views
  if arg.frames:
    c.data.frames = arg.frames
  return c
