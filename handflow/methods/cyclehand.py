"""CycleHand: single-image hand mesh regression made robust to viewpoint by 3D-rotation cycles
through a photometric renderer (REFERENCE §5; the paper's body is not public: choices below).

Per image (`data.single_view`: every view of every frame is a sample, [b, 1, 1, ...]):
- (a) `HandPoseNet` -> MANO pose (6D, the wrist's camera-frame orientation first), shape, camera,
  a texture offset (VAE) and a light. The camera is a weak-perspective scale and root position
  in crop units; with the crop's intrinsics K it places the hand in the camera frame (root depth
  = f / (crop size x scale)), so every render uses the true perspective.
- Photometric: (a) rendered differentiably over the input itself (`renderer`: "aa", the
  z-buffer with antialiased edges, `render.hand_render.render_aa`, or "soft", SoftRas-style,
  `render_soft`), L1 on the dataset's hand mask, and 1 - soft IoU of the silhouette with that
  mask.
- The cycle (`loss.cycle` > 0): a rotation R about the root (uniform axis, angle up to
  `cycle.max_angle`) gives (b), the hand a with global orientation R R_a; (b) is rendered sharp
  (`render_hard`, per-pixel texture) with a random ambient light and point light, a skin-tone
  gain, over the input ("original") or another image of the batch ("new"). The network on (b)
  gives c; d = R^T c. Losses: c vs b and d vs a (root-relative keypoints, cm, and the wrist's
  rotation), and the input vs a differentiable render of d (L1 on the mask).
  Which renders carry gradients: (a) and (d), which are compared with the real image, so the
  error flows into pose, shape, camera, texture and light. (b) is an input of the network, like
  any training image: it is rendered without gradient (also 2x cheaper, and sharp). The target
  b of the c-b term is the prediction a rotated, with a stop-gradient (the term teaches the net
  to read rotated hands, it must not drag a towards c); the d-a term lets both sides move (it is
  the consistency that carries the signal to unlabelled real images).
- Contrastive (`loss.contrastive` > 0): NT-Xent between the projections of the real image's
  global feature and its re-rendering's (the hand a over the input: render (a) without
  gradient when the photometric terms made it, else a sharp render), batch negatives,
  temperature `loss.temperature`: features that do not tell real from rendered.
- Mechanical (`loss.limits`, `loss.penetration`): the anatomical joint limits of `hand.limits`
  and the overlap of non-adjacent finger capsules (`hand.priors.penetration`).
- Supervision on the labelled subset (`data.labelled_fraction` of the images by a fixed hash,
  restricted to camera-palm angles <= `data.labelled_views` degrees when > 0): root-relative 3D
  keypoints, 2D keypoints (and the 2D head's heatmaps, `model.keypoints`), and when the model is
  the dataset's own (the synthetic data's open hand), the joint rotations and shape. The other
  images' ground truth is never read.
Cycle, photometric and contrastive terms start at step `loss.self_start` (a supervised warm-up:
an untrained hand renders nothing like the input). `texture`: "uv" (the open hand's texture
coordinates on the shipped base skin map, `hand.skin_texture`) or "vertex" (per-vertex colour: a
planar projection of the rest hand indexes the offset map over a uniform skin tone; the only
choice for MANO, which has no UVs; `cyclehand_scene`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from handflow import hand
from handflow.data import crops
from handflow.hand import limits, priors
from handflow.methods import base, losses, single_image
from handflow.methods import cyclehand_losses as cl
from handflow.methods import cyclehand_scene as scene
from handflow.models import hand_pose_net
from handflow.render import hand_render

RENDERERS = {"aa": hand_render.render_aa_batch, "soft": hand_render.render_soft_batch}  # [b, ...]
SELF_TERMS = ("photo", "silhouette", "cycle", "cycle_photo", "contrastive")
LOSS_TERMS = (
  *SELF_TERMS, *single_image.SUPERVISED_TERMS, "sup_heatmap",
  "limits", "penetration", "shape", "kl",
)  # fmt: skip


class ConfigError(ValueError):
  """A CycleHand config key with an invalid value."""


def _check(cond, key, msg):
  if not cond:
    raise ConfigError(f"config {key}: {msg}")


_PLACED = [f.name for f in dataclasses.fields(single_image.Placed)]


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=[*_PLACED, "albedo", "light", "net"],
  meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class Hand(single_image.Placed):
  """A placed hand (camera frame, metres) with its appearance and the network output."""

  albedo: jax.Array  # [n, f, 3, 3] per face corner
  light: hand_render.Light
  net: hand_pose_net.NetOutput


@dataclasses.dataclass(frozen=True)
class SelfPlan:
  """What a self-supervised step computes, decided once from the loss weights: `loss_fn`
  follows it, and `sharp_renders` and the term names read it, so they cannot drift apart."""

  render_a: bool  # (a) rendered differentiably over the input (photometric terms)
  cycle: bool  # (b) rendered sharp, the network on it, c and d
  cycle_photo: bool  # d rendered differentiably over the input
  contrastive: bool

  @classmethod
  def from_weights(cls, w) -> SelfPlan:
    return cls(
      render_a=bool(w["photo"] or w["silhouette"]),
      cycle=bool(w["cycle"] or w["cycle_photo"]),
      cycle_photo=bool(w["cycle_photo"]),
      contrastive=bool(w["contrastive"]),
    )

  @property
  def rerender(self) -> bool:
    """A sharp re-rendering for the contrastive pair: only without (a) to reuse."""
    return self.contrastive and not self.render_a

  def sharp_renders(self) -> tuple[str, ...]:
    return ("(b)",) * self.cycle + ("the re-rendering",) * self.rerender

  def term_names(self, has_mask: bool) -> tuple[str, ...]:
    """The self-supervised terms the step computes."""
    return (
      ("photo",) * self.render_a
      + ("silhouette",) * (self.render_a and has_mask)
      + ("cycle",) * self.cycle
      + ("cycle_photo",) * self.cycle_photo
      + ("contrastive",) * self.contrastive
    )


class CycleHand(base.MethodBase):
  name = "cyclehand"
  title = "CycleHand"

  def __init__(self, config):
    m, lo = config.model, config.loss
    self.model = hand.load(config.hand.model, config.hand.side)
    self.side = config.hand.side
    self.convention = config.hand.convention
    self.texture_mode = config.get("texture", "uv")
    _check(
      self.texture_mode in scene.TEXTURES,
      "texture",
      f"'{self.texture_mode}': one of {scene.TEXTURES}",
    )
    if self.texture_mode == "uv" and not self.model.has_uv:
      raise ConfigError(
        f"config texture='uv': hand model '{config.hand.model}' has no texture coordinates "
        "(MANO ships none); set --config.texture=vertex (per-vertex colour)"
      )
    renderer = config.get("renderer", "soft")
    _check(renderer in RENDERERS, "renderer", f"'{renderer}': one of {tuple(RENDERERS)}")
    self.render_diff = RENDERERS[renderer]
    self.weights = base.loss_weights(lo, LOSS_TERMS, ConfigError)
    self.plan = SelfPlan.from_weights(self.weights)
    self.max_angle = float(np.radians(config.cycle.max_angle))
    _check(
      0 < config.cycle.max_angle <= 180,
      "cycle.max_angle",
      f"{config.cycle.max_angle}: degrees in (0, 180]",
    )
    self.new_background = float(config.cycle.get("new_background", 0.5))
    _check(0 <= self.new_background <= 1, "cycle.new_background", "a probability in [0, 1]")
    self.temperature = float(lo.get("temperature", 0.5))
    _check(self.temperature > 0, "loss.temperature", f"{self.temperature}: must be > 0")
    self.self_start = int(lo.get("self_start", 0))
    d = config.data
    self.labelled_fraction = float(d.get("labelled_fraction", 1.0))
    _check(0 <= self.labelled_fraction <= 1, "data.labelled_fraction", "a share in [0, 1]")
    self.labelled_cone = float(d.get("labelled_views", 0.0))
    _check(0 <= self.labelled_cone <= 180, "data.labelled_views", "degrees in [0, 180]")
    self.label_seed = int(d.get("seed", 0))
    _check(m.pool in hand_pose_net.POOLS, "model.pool", f"'{m.pool}': one of {hand_pose_net.POOLS}")
    stem = int(m.get("stem_stride", 4))
    _check(stem in (2, 4), "model.stem_stride", f"{stem}: 2 or 4")
    kp_stride = int(m.get("keypoint_stride", 4))
    fine = (stem, 2 * stem, 4 * stem)
    _check(kp_stride in fine, "model.keypoint_stride", f"{kp_stride}: one of {fine} (stem {stem})")
    self.net = hand_pose_net.HandPoseNet(
      backbone_depth=m.backbone_depth,
      backbone_width=m.backbone_width,
      feature_dim=m.feature_dim,
      hidden=m.hidden,
      num_betas=self.model.num_betas,
      iterations=m.iterations,
      texture_latent=m.texture_latent,
      texture_resolution=m.texture_resolution,
      proj_dim=m.proj_dim,
      pool=m.pool,
      pool_stride=m.pool_stride,
      pool_channels=m.pool_channels,
      stem_stride=stem,
      keypoints=bool(m.get("keypoints", False)),
      keypoint_stride=kp_stride,
    )
    _check(
      not self.weights["sup_heatmap"] or self.net.keypoints,
      "loss.sup_heatmap",
      "supervises the 2D keypoint head: set config.model.keypoints=True (or the weight to 0)",
    )
    self.look = scene.Appearance.create(self.model, self.texture_mode, int(m.texture_resolution))
    self.axes = limits.joint_axes(self.model)

  # --- the forward model -------------------------------------------------------------------

  def _images(self, batch):
    img = batch["images"]
    return img.reshape((-1,) + img.shape[-3:])

  def _K(self, batch):
    return batch["K"].reshape(-1, 3, 3)

  def place(self, net: hand_pose_net.NetOutput, K, size: int) -> Hand:
    """The network's output as a hand in each image's camera frame."""
    p = single_image.place(self.model, net.mano, K, size, self.convention)
    albedo = jax.vmap(self.look.albedo)(net.tex_offset)
    light = hand_render.Light(*hand_pose_net.light_from_raw(net.light, p.root))
    return Hand(**vars(p), albedo=albedo, light=light, net=net)

  def rotate(self, h: Hand, R):
    """(vertices, keypoints) of the hand rotated by R [n, 3, 3] about its root."""
    return scene.rotate_about(R, h.verts, h.root), scene.rotate_about(R, h.joints, h.root)

  @staticmethod
  def rotate_back(c: Hand, R, root):
    """d: the vertices of c rotated by R^T about its root, then moved to `root` [n, 3] (a's:
    d is compared with the input a was predicted from)."""
    return scene.rotate_about(jnp.swapaxes(R, -1, -2), c.verts, c.root, root)

  def sharp_renders(self) -> tuple[str, ...]:
    """What a self-supervised step renders sharp (no gradient): (b) for the cycle, and the
    contrastive pair's re-rendering only when no photometric term made render (a), which it
    otherwise reuses (`bench.cyclehand` counts these)."""
    return self.plan.sharp_renders()

  @staticmethod
  def cycle_loss(a: Hand, c: Hand, R):
    """[n]: c against b = a rotated by R (a held fixed: the target of a rotated image) and
    d = R^T c against a (both move): root-relative keypoints in cm plus the wrist rotation's
    squared Frobenius distance. 0 when c is exactly a rotated by R."""
    sg = jax.lax.stop_gradient
    Rt = jnp.swapaxes(R, -1, -2)
    rot = lambda M, x: jnp.einsum("nij,npj->npi", M, x)
    return (
      cl.joint_l1_cm(c.joints, rot(R, sg(a.joints)))
      + cl.rotation_l2(c.R[:, 0], R @ sg(a.R[:, 0]))
      + cl.joint_l1_cm(rot(Rt, c.joints), a.joints)
      + cl.rotation_l2(Rt @ c.R[:, 0], a.R[:, 0])
    )

  def _forward(self, params, images, K, rng=None) -> Hand:
    rngs = {"texture": rng} if rng is not None else {}
    net = self.net.apply(params, images, rngs=rngs)
    return self.place(net, K, images.shape[-2])

  # --- the interface -----------------------------------------------------------------------

  def init(self, rng, batch):
    single_image.check_batch(batch, "CycleHand", self.labelled_fraction > 0, ConfigError)
    img = self._images(batch)[:1]
    return self.net.init({"params": rng, "texture": rng}, img), {}

  def predict(self, params, extra, batch):
    """joints [b, t, 21, 3] / vertices [b, t, n, 3] in the world frame (single view: view 0's
    `T_cam_world` inverted), their camera-frame versions `joints_cam`, `vertices_cam`, the 2D
    keypoints `uv` [b, t, v, 21, 2] (crop pixels) and the palm angle `view_angle` [b, t]."""
    del extra
    K = self._K(batch)
    return single_image.outputs(self._forward(params, self._images(batch), K), K, batch, self.side)

  def labelled(self, batch):
    """[n] float: the images whose labels the loss may read (and real, not padding)."""
    return single_image.labelled(
      batch, self.labelled_fraction, self.label_seed, self.labelled_cone, self.side
    )

  def loss_fn(self, params, extra, batch, rng, step):
    del extra
    w = self.weights
    n = batch["images"].shape[0]
    mask = batch["mask"].reshape(n)
    images, K = self._images(batch), self._K(batch)
    size = images.shape[-2]
    rgb = crops.denormalise(images)  # [n, s, s, 3] in [0, 1]
    k_tex, k_rot, k_b, k_c = jax.random.split(rng, 4)
    a = self._forward(params, images, K, k_tex)
    terms = {}
    hand_mask = batch["hand_mask"].reshape(n, size, size) if "hand_mask" in batch else None
    faces = self.model.faces
    render = self.render_diff
    soft = lambda v, k, alb, lt, bg: render(v, faces, k, (size, size), alb, lt, bg)

    # The self-supervised terms, behind a cond: the supervised warm-up skips their renders
    # and extra network pass (about 4x cheaper steps), instead of computing them at weight 0.
    plan = self.plan
    names = plan.term_names(hand_mask is not None)

    def self_terms():
      terms = {}
      # Photometric: (a) over the input.
      if plan.render_a:
        render_a, sil_a = soft(a.verts, K, a.albedo, a.light, rgb)
        region = hand_mask if hand_mask is not None else jax.lax.stop_gradient(sil_a > 0.5)
        terms["photo"] = cl.masked_l1(render_a, rgb, region)
        if hand_mask is not None:
          terms["silhouette"] = cl.soft_iou_loss(sil_a, hand_mask)

      # The cycle and the contrastive pair: renders without gradient, one network pass.
      extra_images = []
      if plan.cycle:
        R = cl.random_rotations(k_rot, n, self.max_angle)
        sg = jax.tree.map(jax.lax.stop_gradient, a)
        verts_b, _ = self.rotate(sg, R)
        image_b = self.look.scene(
          verts_b, sg.root, sg.net.tex_offset, K, size, rgb, k_b, self.new_background
        )
        extra_images.append(image_b)
      if plan.contrastive and not plan.rerender:
        # The re-rendering is (a) itself: the hand a over the input, lit and textured per
        # corner (at 64 px a face is about a pixel, so per-pixel texture adds nothing); saves a
        # sharp render, ~10% of the self-supervised step (41 of 427 ms, bench.cyclehand).
        extra_images.append(jax.lax.stop_gradient(render_a))
      elif plan.rerender:
        sg = jax.tree.map(jax.lax.stop_gradient, a)
        extra_images.append(
          self.look.render_sharp(sg.verts, K, size, sg.net.tex_offset, sg.light, rgb)
        )
      if extra_images:
        stacked = crops.normalise(jnp.concatenate(extra_images))
        net_x = self.net.apply(params, jax.lax.stop_gradient(stacked), rngs={"texture": k_c})
        split = lambda t, i: jax.tree.map(lambda x: x[i * n : (i + 1) * n], t)
        i = 0
        if plan.cycle:
          c = self.place(split(net_x, i), K, size)
          i += 1
          terms["cycle"] = self.cycle_loss(a, c, R)
          if plan.cycle_photo:
            d_verts = self.rotate_back(c, R, a.root)
            render_d, sil_d = soft(d_verts, K, a.albedo, a.light, rgb)
            region = hand_mask if hand_mask is not None else jax.lax.stop_gradient(sil_d > 0.5)
            terms["cycle_photo"] = cl.masked_l1(render_d, rgb, region)
        if plan.contrastive:
          z_re = split(net_x, i).proj
          pair = cl.nt_xent(a.net.proj, z_re, mask, self.temperature)
          terms["contrastive"] = 0.5 * (pair[:n] + pair[n:])

      return terms

    if names:
      zeros = lambda: {k: jnp.zeros((n,), jnp.float32) for k in names}
      if self.self_start > 0:
        terms.update(jax.lax.cond(jnp.asarray(step) >= self.self_start, self_terms, zeros))
      else:
        terms.update(self_terms())

    # Mechanical constraints and priors (every image).
    terms["limits"] = priors.limits(a.R[:, 1:], self.axes)
    terms["penetration"] = priors.penetration(a.joints) / cl.CM
    terms["shape"] = priors.shape(a.net.mano.betas)
    mu, logvar = a.net.tex_mu, a.net.tex_logvar
    terms["kl"] = 0.5 * jnp.mean(mu**2 + jnp.exp(logvar) - 1.0 - logvar, -1)

    # Supervision on the labelled subset.
    lab = jnp.zeros((n,))
    if "xyz" in batch and self.labelled_fraction > 0:
      lab = self.labelled(batch)
      sup = [k for k in single_image.SUPERVISED_TERMS if w.get(k)]
      terms.update(single_image.supervised_terms(self.model, a, K, size, batch, sup))
      if w["sup_heatmap"]:
        terms["sup_heatmap"] = single_image.heatmap_term(a.net.log_heatmap, batch, size)

    loss, metrics = 0.0, {}
    for k, v in terms.items():
      sup = k.startswith("sup")
      # Self-supervised terms are 0 before `self_start` (the cond above skips them).
      val = losses.weighted_mean(v, mask * lab if sup else mask)
      metrics[f"loss/{k}"] = val
      loss = loss + w[k] * val
    metrics["labelled_share"] = jnp.sum(lab) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, (metrics, None)

  # --- report ------------------------------------------------------------------------------

  def figures(self, params, extra, batch, count: int = 4) -> dict:
    """{"cycle.png": a grid of the cycle on the first `count` images}: the input, (a) the
    prediction rendered over it, (b) the hand rotated (a fixed 60-degree turn about each image's
    own random axis) under a random light and tone, (c) the prediction on (b), (d) c rotated
    back, rendered over the input. Sharp renders."""
    from handflow.viz import figures

    del extra
    sub = jax.tree.map(lambda x: x[:count], batch)
    images, K = self._images(sub), self._K(sub)
    n, size = images.shape[0], images.shape[-2]
    rgb = crops.denormalise(images)
    key = jax.random.key(0)
    a = self._forward(params, images, K)
    R = cl.random_rotations(key, n, np.radians(60.0), min_angle=np.radians(60.0))
    verts_b, _ = self.rotate(a, R)
    image_b = self.look.scene(
      verts_b, a.root, a.net.tex_offset, K, size, rgb, key, self.new_background
    )
    c = self._forward(params, crops.normalise(image_b), K)
    d_verts = self.rotate_back(c, R, a.root)
    draw = lambda h, v, bg: self.look.render_sharp(v, K, size, h.net.tex_offset, h.light, bg)
    columns = [
      ("input", rgb),
      ("(a) prediction", draw(a, a.verts, rgb)),
      ("(b) rotated, re-lit", image_b),
      ("(c) prediction on (b)", draw(c, c.verts, image_b)),
      ("(d) (c) rotated back", draw(a, d_verts, rgb)),
    ]
    columns = [(label, np.asarray(jax.device_get(x))) for label, x in columns]
    return {"cycle.png": figures.image_grid_png(columns, title=f"{self.title}: the cycle")}
