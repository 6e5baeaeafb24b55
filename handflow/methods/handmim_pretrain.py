"""HandMIM pre-training (`method = "handmim_pretrain"`): a ViT learns from unlabelled hand images
by masked image modeling with an EMA teacher (REFERENCE §6; arXiv 2307.16061).

Per image (`data.single_view`; no label is read):
- Two views with known affine maps (`mim_losses.random_affines`: crop scale, in-plane rotation,
  shift; no flips, so the keypoint alignment needs no left-right matching), rendered on device.
- Block masks (BEiT, `mim_losses.block_masks`) on a share `mim.mask_prob` of the views, ratio
  ~ U(`mim.mask_ratio`). The student sees the masked views, the teacher (the EMA of the student,
  in the method's `extra` state) the full ones.
- Objectives (weights `loss.*`; each is logged as loss/<name>):
  - `cls`: [CLS] self-distillation across views (student view 1 vs teacher view 2 and back);
  - `patch`: iBOT patch self-distillation on the masked patches of the same view;
    both with the teacher's logits centred (running mean, `mim.center_momentum`) and sharpened
    (temperature warm-up `mim.teacher_temp` over `mim.teacher_temp_warmup` steps), the student
    at `mim.student_temp`;
  - `keypoints`: pseudo keypoint alignment: [CLS] -> k 2D points per view; the teacher's points
    of one view are carried through the two known maps into the other view; L1 to the
    student's, symmetrised (pose-aware [CLS] tokens: the points must move with the hand);
  - `pixels`: MAE's normalised-pixel MSE on masked patches, from the blocks `model.pixel_depths`
    (several depths: a multi-level representation), averaged.
- The teacher's momentum follows a half cosine from `mim.teacher_momentum` to 1 at `num_steps`.
Fine-tuning (`handflow.methods.handmim`) loads the "backbone" subtree, by default the teacher's
(`init_from.tree = "extra/teacher"`, as iBOT and DINO evaluate their teachers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from handflow.methods import base, losses, single_image
from handflow.methods import mim_losses as ml
from handflow.models import mim_net, vit

LOSS_TERMS = ("cls", "patch", "keypoints", "pixels")


class ConfigError(ValueError):
  """A HandMIM config key with an invalid value."""


def check(cond, key, msg):
  if not cond:
    raise ConfigError(f"config {key}: {msg}")


def vit_config(config) -> dict:
  """The ViT of `config.model` (`vit` variant string; `width`, `depth`, `heads`, `mlp_dim`
  override it when non-zero), checked against the crop size."""
  m = config.model
  try:
    cfg = vit.variant(m.vit, **{k: m.get(k, 0) for k in ("width", "depth", "heads", "mlp_dim")})
  except vit.ViTConfigError as e:
    raise ConfigError(f"config model.vit: {e}") from None
  size = config.data.crop_size or config.data.image_size
  check(size % cfg["patch"] == 0, "data.crop_size",
        f"{size} px is not a multiple of the ViT's patch size {cfg['patch']}")  # fmt: skip
  return cfg


class HandMIMPretrain(base.MethodBase):
  name = "handmim_pretrain"
  title = "HandMIM pre-training"

  def __init__(self, config):
    self.vit_cfg = vit_config(config)
    m, mim, lo = config.model, config.mim, config.loss
    self.size = int(config.data.crop_size or config.data.image_size)
    self.grid = self.size // self.vit_cfg["patch"]
    depths = tuple(int(d) for d in m.pixel_depths)
    for d in depths:
      check(0 <= d < self.vit_cfg["depth"], "model.pixel_depths",
            f"block {d} is outside the ViT's {self.vit_cfg['depth']} blocks")  # fmt: skip
    self.net = mim_net.MIMNet(
      self.vit_cfg,
      drop_path=float(m.drop_path),
      head_hidden=int(m.head_hidden),
      bottleneck=int(m.bottleneck),
      prototypes=int(m.prototypes),
      keypoints=int(m.keypoints),
      pixel_depths=depths,
    )
    self.weights = base.loss_weights(lo, LOSS_TERMS, ConfigError)
    check(not self.weights["pixels"] or depths, "model.pixel_depths",
          "empty, but loss.pixels > 0 needs at least one depth")  # fmt: skip
    self.ratio = tuple(float(r) for r in mim.mask_ratio)
    check(len(self.ratio) == 2 and 0 <= self.ratio[0] <= self.ratio[1] < 1, "mim.mask_ratio",
          f"{self.ratio}: (low, high) with 0 <= low <= high < 1")  # fmt: skip
    self.mask_prob = float(mim.mask_prob)
    check(0 <= self.mask_prob <= 1, "mim.mask_prob", "a probability in [0, 1]")
    self.scale = tuple(float(s) for s in mim.view_scale)
    check(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], "mim.view_scale",
          f"{self.scale}: (low, high) with 0 < low <= high")  # fmt: skip
    self.rotation = float(mim.view_rotation)
    self.shift = float(mim.view_shift)
    self.momentum = float(mim.teacher_momentum)
    check(0 <= self.momentum <= 1, "mim.teacher_momentum", "in [0, 1]")
    self.t_temp = tuple(float(t) for t in mim.teacher_temp)
    self.t_warmup = int(mim.teacher_temp_warmup)
    self.s_temp = float(mim.student_temp)
    check(min(self.t_temp + (self.s_temp,)) > 0, "mim.teacher_temp/student_temp", "must be > 0")
    self.center_momentum = float(mim.center_momentum)
    self.num_steps = int(config.num_steps)

  def _images(self, batch):
    img = batch["images"]
    n = int(np.prod(img.shape[:3]))
    if img.shape[-3] != self.size:
      raise ConfigError(
        f"batch images are {img.shape[-3]} px but the ViT was sized for {self.size}"
      )
    return img.reshape((n,) + img.shape[-3:])

  def init(self, rng, batch):
    single_image.check_batch(batch, "HandMIM pre-training", False, ConfigError)
    img = self._images(batch)[:1]
    k = self.net.init({"params": rng, "dropout": rng}, img, jnp.zeros((1, self.grid**2), bool))
    prototypes = self.net.prototypes
    extra = {
      "teacher": jax.tree.map(jnp.copy, k),
      "center_cls": jnp.zeros((prototypes,), jnp.float32),
      "center_patch": jnp.zeros((prototypes,), jnp.float32),
    }
    return k, extra

  def param_labels(self, params):
    """ "backbone" for the ViT, "head" for the rest."""
    return base.backbone_head_labels(params)

  def views(self, images, key):
    """(views [2n, s, s, 3]: view 1 of every image then view 2, A [2n, 2, 3] their maps)."""
    n = images.shape[0]
    A = ml.random_affines(key, 2 * n, self.size, self.scale, self.rotation, self.shift)
    both = jnp.concatenate([images, images])
    return ml.warp(both, A, self.size), A

  def loss_fn(self, params, extra, batch, rng, step):
    images = self._images(batch)
    n = images.shape[0]
    valid = batch["mask"].reshape(n)
    k_view, k_mask, k_drop = jax.random.split(rng, 3)
    views, A = self.views(images, k_view)
    masks = ml.block_masks(k_mask, 2 * n, self.grid, self.ratio, self.mask_prob)
    s = self.net.apply(params, views, masks, train=True, rngs={"dropout": k_drop})
    t = jax.lax.stop_gradient(self.net.apply(extra["teacher"], views, None))
    tau = ml.teacher_temperature(step, self.t_warmup, *self.t_temp)
    swap = lambda x: jnp.concatenate([x[n:], x[:n]])
    halves = lambda x: 0.5 * (x[:n] + x[n:])  # [2n] -> [n]: the two views of an image
    terms = {}
    ce_cls = ml.distillation_ce(swap(t["cls_logits"]), s["cls_logits"], extra["center_cls"], tau,
                                self.s_temp)  # fmt: skip
    terms["cls"] = halves(ce_cls)
    ce_patch = ml.distillation_ce(t["patch_logits"], s["patch_logits"], extra["center_patch"],
                                  tau, self.s_temp)  # fmt: skip
    terms["patch"] = halves(ml.masked_mean(ce_patch, masks))
    A1, A2 = A[:n], A[n:]
    kt, ks = t["keypoints"], s["keypoints"]
    terms["keypoints"] = 0.5 * (
      ml.keypoint_alignment(kt[:n], ks[n:], A1, A2, self.size)
      + ml.keypoint_alignment(kt[n:], ks[:n], A2, A1, self.size)
    )
    if self.net.pixel_depths:
      target = ml.pixel_targets(views, self.vit_cfg["patch"])
      err = jnp.mean((s["pixels"] - target[None]) ** 2, -1)  # [m, 2n, g*g]
      terms["pixels"] = halves(jnp.mean(jax.vmap(lambda e: ml.masked_mean(e, masks))(err), 0))
    loss, metrics = 0.0, {}
    for k, v in terms.items():
      val = losses.weighted_mean(v, valid)
      metrics[f"loss/{k}"] = val
      loss = loss + self.weights[k] * val
    metrics["mask_share"] = jnp.mean(masks)
    metrics["teacher_temp"] = tau
    # The teacher's output statistics, for centering (padding excluded).
    w2 = jnp.concatenate([valid, valid])
    count = jnp.maximum(jnp.sum(w2), 1.0)
    aux = {
      "cls_mean": jnp.einsum("n,nk->k", w2, t["cls_logits"]) / count,
      "patch_mean": jnp.einsum("n,npk->k", w2, t["patch_logits"]) / (count * self.grid**2),
    }
    return loss, (metrics, aux)

  def update_extra(self, extra, params, aux, step):
    m = ml.ema_momentum(step, self.num_steps, self.momentum)
    c = self.center_momentum
    return {
      "teacher": ml.ema_update(extra["teacher"], params, m),
      "center_cls": c * extra["center_cls"] + (1 - c) * aux["cls_mean"],
      "center_patch": c * extra["center_patch"] + (1 - c) * aux["patch_mean"],
    }

  def predict(self, params, extra, batch):
    """The teacher's outputs: `cls` [b, t, d] (the [CLS] token: the representation
    fine-tuning starts from) and pseudo `keypoints` [b, t, k, 2] (crop units)."""
    del params
    lead = batch["images"].shape[:2]
    images = self._images(batch)
    out = self.net.apply(extra["teacher"], images, None)
    return {
      "cls": out["cls"].reshape(lead + out["cls"].shape[1:]),
      "keypoints": out["keypoints"].reshape(lead + out["keypoints"].shape[1:]),
    }
