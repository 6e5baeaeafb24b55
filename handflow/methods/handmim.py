"""HandMIM fine-tuning (`method = "handmim"`): a ViT (pre-trained by `handmim_pretrain`, or from
scratch) with a PyMAF mesh-alignment head regresses MANO from one image (REFERENCE §6).

- Network: `models.pymaf.HandMeshNet`: ViT -> patch grid -> deconvolution pyramid -> 3 PyMAF
  iterations (grid features, then features at the projected, subsampled mesh vertices).
- Placement and outputs as every single-image regressor (`methods.single_image`): the wrist's
  camera-frame orientation, bounded shape, a camera that puts the root in true perspective.
- Losses at every iteration (averaged; weights `loss.*`, each logged as loss/<name> for the last
  iteration): 3D keypoints and vertices (root-relative, cm), 2D keypoints, joint rotations and
  shape (when the data carries the model's own parameters), a small shape prior.
- Labels: `data.labelled_fraction` of the training images by a fixed hash of `image_id`
  (`data.labelled_only` makes the input pipeline read only those, so 1% of the labels costs 1% of
  the images, not 99% wasted batch rows); the loss reads no other image's labels either way.
- Optimiser: layer-wise learning-rate decay over the ViT's blocks (`optim.layer_decay`,
  labels "backbone" / "head").
- Initialisation: `init_from.workdir` = a pre-training run (its teacher's "backbone" subtree by
  default); `load_pretrained` refuses a checkpoint whose ViT has another width, depth or patch
  size (one line naming both) and resamples position embeddings to this crop's grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from handflow import finetune, hand
from handflow.geometry import cameras
from handflow.hand import priors
from handflow.methods import base, losses, single_image
from handflow.methods.handmim_pretrain import ConfigError, check, vit_config
from handflow.models import pymaf, vit

LOSS_TERMS = (*single_image.SUPERVISED_TERMS, "shape")


def backbone_shape(tree) -> dict:
  """{"width", "depth", "patch"} of the ViT under a restored or initial tree's "backbone" (None
  when the tree has none)."""
  flat = finetune.flatten(tree)
  kernels = [k for k in flat if k.endswith("backbone/embedding/kernel")]
  if not kernels:
    return None
  prefix = kernels[0][: -len("embedding/kernel")]
  shape = np.shape(flat[kernels[0]])
  blocks = {k[len(prefix) :].split("/")[0] for k in flat if k.startswith(prefix + "blocks_")}
  return {"width": int(shape[-1]), "depth": len(blocks), "patch": int(shape[0])}


class HandMIM(base.MethodBase):
  name = "handmim"
  title = "HandMIM"

  def __init__(self, config):
    self.vit_cfg = vit_config(config)
    m, lo, d = config.model, config.loss, config.data
    self.model = hand.load(config.hand.model, config.hand.side)
    self.side = config.hand.side
    self.convention = config.hand.convention
    self.size = int(d.crop_size or d.image_size)
    head = dict(
      num_betas=self.model.num_betas,
      deconv=tuple(int(c) for c in m.deconv),
      point_mlp=tuple(int(c) for c in m.point_mlp),
      grid_points=int(m.grid_points),
      hidden=int(m.hidden),
      iterations=int(m.iterations),
    )
    self.net = pymaf.HandMeshNet(self.vit_cfg, head, drop_path=float(m.drop_path))
    check(int(m.iterations) >= 1, "model.iterations", "at least 1")
    n_v = self.model.num_vertices
    k = int(m.vertex_points)
    check(0 < k <= n_v, "model.vertex_points", f"{k}: between 1 and the model's {n_v} vertices")
    self.vertex_ids = np.round(np.linspace(0, n_v - 1, k)).astype(np.int32)
    self.weights = base.loss_weights(lo, LOSS_TERMS, ConfigError)
    self.labelled_fraction = float(d.get("labelled_fraction", 1.0))
    check(0 < self.labelled_fraction <= 1, "data.labelled_fraction", "a share in (0, 1]")
    self.label_seed = int(d.get("seed", 0))

  def _images(self, batch):
    img = batch["images"]
    if img.shape[-3] != self.size:
      raise ConfigError(
        f"batch images are {img.shape[-3]} px but the ViT was sized for {self.size}"
      )
    return img.reshape((-1,) + img.shape[-3:])

  def _K(self, batch):
    return batch["K"].reshape(-1, 3, 3)

  def _project(self, K):
    """ManoParams -> the subsampled vertices' image positions [n, p, 2], crop units."""

    def fn(est):
      h = single_image.place(self.model, est, K, self.size, self.convention)
      uv, _ = cameras.project(K, h.verts[:, self.vertex_ids])
      return (uv + 0.5) / self.size  # pixel centres at i + 0.5 in [0, 1] units

    return fn

  def forward(self, params, batch, rng=None) -> list[single_image.Placed]:
    """The hand of every iteration, placed in each image's camera."""
    images, K = self._images(batch), self._K(batch)
    rngs = {"dropout": rng} if rng is not None else {}
    outs = self.net.apply(params, images, self._project(K), train=rng is not None, rngs=rngs)
    return [single_image.place(self.model, o, K, self.size, self.convention) for o in outs]

  # --- the interface -----------------------------------------------------------------------

  def init(self, rng, batch):
    single_image.check_batch(batch, "HandMIM fine-tuning", True, ConfigError)
    img = self._images(batch)[:1]
    K = self._K(batch)[:1]
    return self.net.init({"params": rng, "dropout": rng}, img, self._project(K)), {}

  def param_labels(self, params):
    """ "backbone" for the ViT, "head" for the rest."""
    return base.backbone_head_labels(params)

  def load_pretrained(self, params, restored, cfg):
    """A pre-training run's tree into this model: the ViT must have the same width, depth and
    patch size (else one line naming both); position embeddings are resampled to this grid."""
    mine, theirs = backbone_shape(params), backbone_shape(restored)
    src = cfg.get("workdir", "?") if cfg else "?"
    if theirs is None:
      raise finetune.FinetuneError(
        f"init_from {src}: the checkpoint's tree has no ViT 'backbone' (not a HandMIM "
        f"pre-training run?); this model's backbone is {vit.describe(self.vit_cfg)}"
      )
    if theirs != mine:
      raise finetune.FinetuneError(
        f"init_from {src}: its backbone is ViT(width {theirs['width']}, depth {theirs['depth']}, "
        f"patch {theirs['patch']}) but this config's is {vit.describe(self.vit_cfg)}; set "
        "config.model.vit (and width/depth) to the pre-training run's"
      )
    restored = jax.tree.map(np.asarray, restored)
    for coll, tree in restored.items():
      if isinstance(tree, dict) and "backbone" in tree and "backbone" in params.get(coll, {}):
        tree["backbone"] = vit.load(tree["backbone"], params[coll]["backbone"])
    return finetune.load(params, restored, cfg)

  def labelled(self, batch):
    """[n] float: the images whose labels the loss may read (and real, not padding)."""
    return single_image.labelled(batch, self.labelled_fraction, self.label_seed)

  def loss_fn(self, params, extra, batch, rng, step):
    del extra, step
    n = self._images(batch).shape[0]
    K = self._K(batch)
    lab = self.labelled(batch)
    names = [k for k in single_image.SUPERVISED_TERMS if self.weights[k]]
    per_iter = []
    for h in self.forward(params, batch, rng):
      terms = single_image.supervised_terms(self.model, h, K, self.size, batch, names)
      terms = {k: losses.weighted_mean(v, lab) for k, v in terms.items()}
      terms["shape"] = losses.weighted_mean(priors.shape(h.betas), batch["mask"].reshape(n))
      per_iter.append(terms)
    loss = sum(self.weights[k] * v for t in per_iter for k, v in t.items()) / len(per_iter)
    metrics = {f"loss/{k}": v for k, v in per_iter[-1].items()}
    metrics["labelled_share"] = jnp.sum(lab) / jnp.maximum(jnp.sum(batch["mask"]), 1.0)
    return loss, (metrics, None)

  def predict(self, params, extra, batch):
    """`single_image.outputs` of the last iteration."""
    del extra
    return single_image.outputs(self.forward(params, batch)[-1], self._K(batch), batch, self.side)
