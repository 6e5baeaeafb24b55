import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import ndimage

from configs import handmim as handmim_config
from handflow import finetune, stages
from handflow.geometry import cameras
from handflow.methods import handmim, handmim_pretrain, single_image
from handflow.methods import mim_losses as ml
from handflow.models import mano_head, pymaf, sampling
from tests.methods.batches import clip_batch

SIZE = 32


@pytest.fixture(scope="module")
def config():
  return handmim_config.get_config("tiny")


@pytest.fixture(scope="module")
def pre(config):
  return handmim_pretrain.HandMIMPretrain(stages.stage_config(config, "pretrain", "/tmp/x"))


@pytest.fixture(scope="module")
def fine(config):
  return handmim.HandMIM(stages.stage_config(config, "finetune", "/tmp/x"))


@pytest.fixture(scope="module")
def batch():
  return clip_batch(views=4, size=SIZE)


@pytest.fixture(scope="module")
def pre_state(pre, batch):
  return jax.jit(pre.init)(jax.random.key(0), batch)


@pytest.fixture(scope="module")
def fine_params(fine, batch):
  return jax.jit(fine.init)(jax.random.key(1), batch)[0]


# --- masks and views -------------------------------------------------------------------------


def test_block_masks_hit_the_ratio_range_in_contiguous_blocks():
  g, n = 14, 64
  masks = np.asarray(ml.block_masks(jax.random.key(0), n, g, (0.2, 0.5), prob=1.0))
  share = masks.mean(1)
  assert share.max() <= 0.5 + 1e-9
  assert share.min() >= 0.2 - 4 / g**2  # within one minimal block of the low end
  sizes = []
  for m in masks:
    labels, k = ndimage.label(m.reshape(g, g))
    sizes += list(np.bincount(labels.ravel())[1:])
  # i.i.d. masks at these ratios average < 2 patches per connected piece; blocks far more.
  assert np.mean(sizes) >= 6, np.mean(sizes)
  none = np.asarray(ml.block_masks(jax.random.key(1), 8, g, (0.2, 0.5), prob=0.0))
  assert not none.any()


def test_warp_and_its_affine_agree_on_where_a_point_goes():
  """A bright pixel at source position p appears in the view at A^-1 p."""
  img = np.zeros((1, SIZE, SIZE, 1), np.float32)
  img[0, 20, 9] = 1.0  # pixel centre (9.5, 20.5)
  A = ml.random_affines(jax.random.key(3), 1, SIZE, scale=(0.7, 0.7), max_rotation_deg=25)
  view = np.asarray(ml.warp(jnp.asarray(img), A, SIZE))[0, ..., 0]
  expect = np.asarray(ml.apply_affine(ml.invert_affine(A), jnp.asarray([[[9.5, 20.5]]])))[0, 0]
  ys, xs = np.nonzero(view > 0.05)
  w = view[ys, xs]
  centroid = np.array([np.sum(w * (xs + 0.5)), np.sum(w * (ys + 0.5))]) / w.sum()
  np.testing.assert_allclose(centroid, expect, atol=0.5)
  eye = jnp.asarray([[[1.0, 0, 0], [0, 1.0, 0]]])
  np.testing.assert_allclose(ml.warp(jnp.asarray(img), eye, SIZE), img, atol=1e-6)


# --- losses and schedules --------------------------------------------------------------------


def test_distillation_cross_entropy_and_centering_by_hand(pre, batch, pre_state):
  t = np.array([[1.0, 2.0, 0.0]])
  s = np.array([[0.5, -1.0, 2.0]])
  c = np.array([0.5, 0.0, -0.5])
  p = np.exp((t - c) / 0.5)
  p /= p.sum()
  logq = s / 0.1 - np.log(np.sum(np.exp(s / 0.1)))
  expect = -np.sum(p * logq)
  np.testing.assert_allclose(ml.distillation_ce(t, s, c, 0.5, 0.1), [expect], rtol=1e-5)
  # Centering: the new centre is 0.9 c + 0.1 (the batch mean of the teacher's logits).
  params, extra = pre_state
  _, (_, aux) = jax.jit(pre.loss_fn)(params, extra, batch, jax.random.key(1), 0)
  views, _ = pre.views(pre._images(batch), jax.random.split(jax.random.key(1), 3)[0])
  logits = pre.net.apply(extra["teacher"], views, None)["cls_logits"]
  np.testing.assert_allclose(aux["cls_mean"], np.mean(logits, 0), atol=1e-5)
  new = pre.update_extra(extra, params, aux, 0)
  np.testing.assert_allclose(new["center_cls"], 0.1 * np.mean(logits, 0), atol=1e-5)


def test_ema_matches_its_formula_and_the_schedules_their_end_points():
  t, s = {"w": jnp.asarray([1.0, 2.0])}, {"w": jnp.asarray([3.0, -2.0])}
  np.testing.assert_allclose(ml.ema_update(t, s, 0.75)["w"], [1.5, 1.0])
  assert float(ml.ema_momentum(0, 100, 0.996)) == pytest.approx(0.996)
  assert float(ml.ema_momentum(100, 100, 0.996)) == pytest.approx(1.0)
  assert float(ml.ema_momentum(50, 100, 0.996)) == pytest.approx(0.998)
  assert float(ml.teacher_temperature(0, 10, 0.04, 0.07)) == pytest.approx(0.04)
  assert float(ml.teacher_temperature(5, 10, 0.04, 0.07)) == pytest.approx(0.055)
  assert float(ml.teacher_temperature(99, 10, 0.04, 0.07)) == pytest.approx(0.07)


def test_the_teacher_follows_the_student_by_the_scheduled_momentum(pre, pre_state):
  params, extra = pre_state
  moved = jax.tree.map(lambda x: x + 1.0, params)
  aux = {"cls_mean": jnp.zeros_like(extra["center_cls"]), "patch_mean": extra["center_patch"]}
  new = pre.update_extra(extra, moved, aux, 0)
  diff = jax.tree.map(lambda a, b: a - b, new["teacher"], extra["teacher"])
  for d in jax.tree.leaves(diff):
    np.testing.assert_allclose(d, 1.0 - pre.momentum, atol=1e-6)


def test_keypoint_alignment_is_zero_for_an_equivariant_student_and_grows_under_a_wrong_map():
  n, k = 3, 5
  A = ml.random_affines(jax.random.key(0), 2 * n, SIZE)
  A1, A2 = A[:n], A[n:]
  kp1 = jax.random.uniform(jax.random.key(1), (n, k, 2))
  kp2 = ml.apply_affine(ml.invert_affine(A2), ml.apply_affine(A1, kp1 * SIZE)) / SIZE
  assert float(jnp.max(ml.keypoint_alignment(kp1, kp2, A1, A2, SIZE))) < 1e-5
  wrong = ml.random_affines(jax.random.key(2), n, SIZE)
  assert float(jnp.min(ml.keypoint_alignment(kp1, kp2, A1, wrong, SIZE))) > 0.02


def test_pixel_targets_are_per_patch_normalised():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3)) * 5 + 2
  t = np.asarray(ml.pixel_targets(x, 8))
  assert t.shape == (2, 4, 8 * 8 * 3)
  np.testing.assert_allclose(t.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(t.std(-1), 1, atol=1e-3)
  np.testing.assert_allclose(t[0, 1], ml.pixel_targets(x[:1, :8, 8:], 8)[0, 0], atol=1e-5)


# --- fine-tuning ------------------------------------------------------------------------------


def test_pymaf_grid_and_sampling_read_known_values():
  g = pymaf.grid_points(3)
  np.testing.assert_allclose(g[:3], [[1 / 6, 1 / 6], [0.5, 1 / 6], [5 / 6, 1 / 6]])
  fmap = jnp.arange(16.0).reshape(1, 4, 4, 1)  # value = 4 row + col at cell centres
  uv = jnp.asarray([[[0.125, 0.125], [0.625, 0.375], [0.5, 0.5]]])
  np.testing.assert_allclose(sampling.bilinear_sample(fmap, uv)[0, :, 0], [0.0, 6.0, 7.5])


def test_mesh_aligned_features_follow_the_projected_vertices(fine, batch):
  """The positions the later PyMAF iterations sample are the placed mesh's vertices projected
  with the crop's K: with the data's own pose, shape and root they land on the ground truth."""
  n = batch["images"].shape[0]
  K = fine._K(batch)
  R = single_image.gt_rotations(batch)
  rot6d = jnp.concatenate([R[..., :, 0], R[..., :, 1]], -1) - mano_head.IDENTITY_6D
  gt_j = single_image.gt_cam(batch)
  uv_root, depth = cameras.project(K, gt_j[:, :1])
  scale = K[:, 0, 0] / (SIZE * depth[:, 0])  # crop units per metre
  c0 = np.log(np.expm1(mano_head.CAMERA_INIT[0]))
  raw_scale = jnp.log(jnp.expm1(scale * 0.2)) - c0
  shift = (uv_root[:, 0] + 0.5) / SIZE - jnp.asarray(mano_head.CAMERA_INIT[1:])
  betas = single_image.BETA_MAX * jnp.arctanh(batch["betas"].reshape(n, -1) / single_image.BETA_MAX)
  est = mano_head.ManoParams(rot6d, betas, jnp.concatenate([raw_scale[:, None], shift], -1))
  uv = fine._project(K)(est)
  gt_v = single_image.gt_cam(batch, "verts")[:, fine.vertex_ids]
  expect, _ = cameras.project(K, gt_v)
  np.testing.assert_allclose(uv * SIZE - 0.5, expect, atol=0.05)


def test_pretraining_initialises_fine_tuning(pre_state, fine, fine_params, batch):
  """The teacher's ViT is loaded (every backbone leaf, value for value), the PyMAF head is
  fresh, the pre-training heads unused; another crop size resamples the position embeddings;
  another ViT size is refused in one line naming both."""
  _, extra = pre_state
  params = fine_params
  teacher = jax.device_get(extra["teacher"])
  new, report = fine.load_pretrained(jax.device_get(params), teacher, {"workdir": "PT"})
  assert report.loaded and all("/backbone/" in p for p in report.loaded)
  assert report.fresh and all("/pymaf/" in p for p in report.fresh)
  assert any("ibot_head" in p for p in report.unused)
  flat_new, flat_t = finetune.flatten(new), finetune.flatten(teacher)
  for p in report.loaded:
    np.testing.assert_array_equal(flat_new[p], flat_t[p])
  # Another crop: 48 px -> a 6x6 grid, resampled from the pre-training's 4x4.
  cfg = stages.stage_config(handmim_config.get_config("tiny"), "finetune", "/tmp/x")
  cfg.data.crop_size = 48
  other = handmim.HandMIM(cfg)
  p48, _ = jax.eval_shape(other.init, jax.random.key(1), clip_batch(views=2, size=48))
  new48, _ = other.load_pretrained(p48, teacher, {"workdir": "PT"})
  assert new48["params"]["backbone"]["pos_embedding"].shape == (1, 37, 32)
  # Another backbone size.
  cfg = stages.stage_config(handmim_config.get_config("tiny"), "finetune", "/tmp/x")
  cfg.model.width, cfg.model.heads = 64, 4
  wide = handmim.HandMIM(cfg)
  pw, _ = jax.eval_shape(wide.init, jax.random.key(1), batch)  # shapes are all it reads
  with pytest.raises(finetune.FinetuneError) as e:
    wide.load_pretrained(pw, teacher, {"workdir": "PT"})
  msg = str(e.value)
  assert "\n" not in msg and "width 32" in msg and "width 64" in msg and "PT" in msg


def test_fine_tuning_from_a_workdir_without_a_checkpoint_is_refused(fine, tmp_path, config):
  cfg = stages.stage_config(config, "finetune", str(tmp_path))
  with pytest.raises(Exception, match=f"init_from = {tmp_path}/pretrain: no checkpoint"):
    finetune.load_pretrained(cfg, fine, {})


def test_layer_decay_scales_the_vit_blocks(fine, fine_params, config):
  from handflow import optim

  cfg = stages.stage_config(config, "finetune", "/tmp/x")
  params = fine_params
  _, mults, _, _ = optim.leaf_groups(cfg.optim, params, fine.param_labels(params))
  m = finetune.flatten(mults)
  r = cfg.optim.layer_decay.rate
  assert m["params/backbone/blocks_1/mlp_in/kernel"] == pytest.approx(r)
  assert m["params/backbone/blocks_0/mlp_in/kernel"] == pytest.approx(r**2)
  assert m["params/backbone/pos_embedding"] == pytest.approx(r**3)
  assert m["params/pymaf/regressor_0_out/kernel"] == 1.0


# --- the tiny configs learn -------------------------------------------------------------------


def _descend(method, batch, steps, lr):
  params, extra = jax.jit(method.init)(jax.random.key(0), batch)
  opt = optax.adam(lr)
  state = opt.init(params)

  @jax.jit
  def step(p, s, e, i):
    (loss, (_, aux)), g = jax.value_and_grad(method.loss_fn, has_aux=True)(
      p, e, batch, jax.random.key(1), i
    )
    ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)]))
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
    return p, s, method.update_extra(e, p, aux, i), loss, ok

  losses = []
  for i in range(steps):
    params, state, extra, loss, ok = step(params, state, extra, i)
    assert bool(ok)
    losses.append(float(loss))
  return losses


def test_tiny_pretraining_lowers_its_loss(pre, batch):
  losses = _descend(pre, batch, 15, 3e-3)
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_tiny_fine_tuning_lowers_its_loss(fine, batch):
  losses = _descend(fine, batch, 15, 3e-3)
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("model.vit", "Q/8", "model.vit"),
    ("mim.mask_ratio", (0.6, 0.2), "mim.mask_ratio"),
    ("model.pixel_depths", (5,), "model.pixel_depths"),
    ("data.crop_size", 36, "data.crop_size"),
  ],
)
def test_invalid_pretraining_config_names_the_key(config, key, value, match):
  cfg = stages.stage_config(config, "pretrain", "/tmp/x")
  group, name = key.split(".")
  cfg[group][name] = value
  with pytest.raises(ValueError, match=match):
    handmim_pretrain.HandMIMPretrain(cfg)


def test_ground_truth_vertices_from_the_data_parameters_match_the_stored_meshes(fine, batch):
  """Training batches with `data.pose_labels` carry no meshes: the method derives them on
  device, and they equal the meshes the pipeline stores for evaluation."""
  stored = single_image.gt_vertices(fine.model, batch)
  derived = single_image.gt_vertices(fine.model, {k: v for k, v in batch.items() if k != "verts"})
  np.testing.assert_allclose(derived, stored, atol=1e-5)
