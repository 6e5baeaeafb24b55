"""CycleHand: its geometry, losses, renders and config checks on known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cyclehand as cyclehand_config
from handflow import hand
from handflow.data import subsets
from handflow.geometry import viewpoint
from handflow.hand import conventions, priors, rotations, skin_texture
from handflow.methods import cyclehand, cyclehand_scene, single_image
from handflow.methods import cyclehand_losses as cl
from handflow.models import hand_pose_net, mano_head
from handflow.render import hand_render, shading
from tests.methods.batches import clip_batch

SIZE = 32
K = jnp.asarray([[60.0, 0, 15.5], [0, 60.0, 15.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def method():
  return cyclehand.CycleHand(cyclehand_config.get_config("tiny"))


def _net_output(n, key, model):
  """A random but plausible NetOutput (no network): pose, shape, camera, texture, light."""
  k = jax.random.split(key, 4)
  mano = mano_head.ManoParams(
    rot6d_delta=0.2 * jax.random.normal(k[0], (n, 16, 6)),
    betas=0.5 * jax.random.normal(k[1], (n, model.num_betas)),
    camera=0.05 * jax.random.normal(k[2], (n, 3)),
  )
  z = jnp.zeros((n, 4))
  return hand_pose_net.NetOutput(
    mano=mano,
    tex_offset=0.05 * jax.random.normal(k[3], (n, 8, 8, 3)),
    tex_mu=z,
    tex_logvar=z,
    light=jnp.zeros((n, 5)),
    proj=z,
    feature=z,
  )


def test_cycle_loss_is_zero_for_the_exactly_rotated_hand(method):
  """theta_b = R theta_a (the wrist's rotation premultiplied) is the hand a rotated about its
  root: articulating it gives the rotated vertices, and the cycle loss of c = b is 0."""
  n = 3
  net = _net_output(n, jax.random.key(0), method.model)
  Ks = jnp.broadcast_to(K, (n, 3, 3))
  a = method.place(net, Ks, SIZE)
  R = cl.random_rotations(jax.random.key(1), n, np.radians(90.0))
  R_b = R @ a.R[:, 0]
  rot6d_b = net.mano.rot6d_delta.at[:, 0].set(
    rotations.matrix_to_rot6d(R_b) - mano_head.IDENTITY_6D
  )
  mano_b = mano_head.ManoParams(rot6d_b, net.mano.betas, net.mano.camera)
  b_net = net.__class__(**{**net.__dict__, "mano": mano_b})
  b = method.place(b_net, Ks, SIZE)  # same camera: same root
  verts_b, joints_b = method.rotate(a, R)
  np.testing.assert_allclose(b.verts, verts_b, atol=2e-5)
  np.testing.assert_allclose(b.joints, joints_b, atol=2e-5)
  np.testing.assert_allclose(method.cycle_loss(a, b, R), 0.0, atol=2e-3)
  other = method.place(_net_output(n, jax.random.key(5), method.model), Ks, SIZE)
  assert np.all(np.asarray(method.cycle_loss(a, other, R)) > 0.1)


def test_the_camera_places_the_root_where_it_projects(method):
  net = _net_output(2, jax.random.key(2), method.model)
  Ks = jnp.broadcast_to(K, (2, 3, 3))
  h = method.place(net, Ks, SIZE)
  uv, depth = jax.vmap(lambda k, x: shading_project(k, x))(Ks, h.root)
  expect = (net.mano.camera[:, 1:] + jnp.asarray(mano_head.CAMERA_INIT[1:])) * SIZE - 0.5
  np.testing.assert_allclose(uv, expect, atol=1e-3)
  assert np.all(np.asarray(depth) > 0)


def shading_project(k, x):
  from handflow.geometry import cameras

  uv, d = cameras.project(k, x[None])
  return uv[0], d[0]


def test_nt_xent_matches_a_hand_computed_value():
  z1 = jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
  z2 = jnp.asarray([[0.6, 0.8], [0.8, -0.6]])
  t = 0.5
  got = cl.nt_xent(z1, z2, jnp.ones(2), t)
  z = np.concatenate([z1, z2])
  sim = z @ z.T / t
  expect = []
  for i, j in enumerate([2, 3, 0, 1]):
    others = [k for k in range(4) if k != i]
    expect.append(-(sim[i, j] - np.log(np.sum(np.exp(sim[i, others])))))
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  # A padded sample is neither an anchor nor a negative.
  got = cl.nt_xent(z1, z2, jnp.asarray([1.0, 0.0]), t)
  assert float(got[1]) == 0.0 and float(got[3]) == 0.0
  np.testing.assert_allclose(got[0], 0.0, atol=1e-6)  # its only candidate is its partner


def test_penetration_is_zero_for_the_open_hand_and_positive_when_fingers_cross():
  model = hand.load("open")
  out = hand.forward(model, jnp.zeros(45))
  kp = np.asarray(conventions.keypoints(model, out.vertices, out.joints, "openpose"))
  assert float(priors.penetration(jnp.asarray(kp))) == 0.0
  crossed = kp.copy()
  crossed[7:9] = kp[11:13]  # the index finger's distal joints inside the middle finger's
  assert float(priors.penetration(jnp.asarray(crossed))) > 0.005
  g = jax.grad(lambda x: priors.penetration(x))(jnp.asarray(crossed))
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_uv_lookup_returns_the_base_map_at_texel_centres():
  tex = jnp.asarray(skin_texture.load())
  h, w = tex.shape[:2]
  ij = np.array([[3, 7], [100, 200], [255, 0]])
  uv = jnp.asarray((ij[:, ::-1] + 0.5) / np.array([w, h]))
  np.testing.assert_allclose(shading.sample_texture(tex, uv), tex[ij[:, 0], ij[:, 1]], atol=1e-6)
  face_uv = jnp.broadcast_to(uv, (2, 3, 2))
  albedo = hand_render.corner_albedo(face_uv, tex)
  np.testing.assert_allclose(albedo[1], tex[ij[:, 0], ij[:, 1]], atol=1e-6)


def test_the_open_hand_has_uvs_and_its_palm_and_back_differ():
  model = hand.load("open")
  assert model.has_uv and model.face_uv.shape == (model.faces.shape[0], 3, 2)
  assert hand.load("open", "left").has_uv
  verts = np.asarray(model.v_template).T
  point, normal, covered = skin_texture.texel_surface(
    verts, np.asarray(model.faces), np.asarray(model.face_uv), 64
  )
  assert covered.mean() > 0.2
  tex = skin_texture.load()[::4, ::4]  # 64 x 64
  back = covered & (normal[..., 1] > 0.6)
  palm = covered & (normal[..., 1] < -0.6)
  assert back.sum() > 20 and palm.sum() > 20
  assert tex[back].mean(0)[0] < tex[palm].mean(0)[0]  # the back is darker


def _light(n=None):
  shape = () if n is None else (n,)
  return hand_render.Light(
    jnp.full(shape, 0.4),
    jnp.full(shape, 0.6),
    jnp.broadcast_to(jnp.asarray([0.0, -0.2, 0.1]), shape + (3,)),  # fmt: skip
  )


@pytest.mark.parametrize("renderer", ["soft", "aa"])
def test_render_is_differentiable_in_pose_camera_light_and_texture(method, renderer):
  model = method.model
  net = _net_output(1, jax.random.key(3), model)
  bg = jnp.full((SIZE, SIZE, 3), 0.3)
  target = jax.random.uniform(jax.random.key(4), (SIZE, SIZE, 3))

  def loss(params, sigma=0.5):
    rot6d, cam, offset, ambient = params
    n2 = net.__class__(**{**net.__dict__, "mano": mano_head.ManoParams(rot6d, net.mano.betas, cam),
                          "tex_offset": offset})  # fmt: skip
    h = method.place(n2, K[None], SIZE)
    light = hand_render.Light(ambient, h.light.diffuse[0], h.light.position[0])
    args = (h.verts[0], model.faces, K, (SIZE, SIZE), h.albedo[0], light, bg)
    if renderer == "aa":
      rgb, sil = hand_render.render_aa(*args)
    else:
      rgb, sil = hand_render.render_soft(*args, sigma=sigma)
    return jnp.mean((rgb - target) ** 2) + jnp.mean(sil)

  params = (net.mano.rot6d_delta, net.mano.camera, net.tex_offset, jnp.asarray(0.4))
  for g in jax.tree.leaves(jax.jit(jax.grad(lambda p: loss(p, sigma=0.2)))(params)):  # training's
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
  grads = jax.jit(jax.grad(loss))(params)
  loss_at = jax.jit(loss)
  # Central differences on a few scalars: the wrist's rotation, the camera's x, one offset
  # texel, the ambient light (at sigma 0.5 px^2: softer edges make the finite differences of
  # a 32 px render smooth enough to compare). The antialiased render is piecewise smooth in
  # pose and camera (a pixel changes face at a step): its geometric gradients are checked
  # against known answers in tests/render/test_antialias.py, texture and light here.
  picks = [(0, (0, 0, 1)), (1, (0, 1)), (2, (0, 4, 4, 0)), (3, ())]
  if renderer == "aa":
    picks = picks[2:]
  for leaf, idx in picks:
    eps = 1e-2 if leaf != 2 else 5e-2

    def at(delta, leaf=leaf, idx=idx):
      p = list(params)
      p[leaf] = p[leaf].at[idx].add(delta)
      return float(loss_at(tuple(p)))

    fd = (at(eps) - at(-eps)) / (2 * eps)
    an = float(grads[leaf][idx])
    assert abs(fd - an) <= 0.1 * abs(an) + 1e-5, (leaf, idx, fd, an)


def test_labels_of_unlabelled_images_are_never_read(method):
  from handflow.data import pipeline as _  # noqa: F401

  n = 8
  rng = np.random.default_rng(0)
  model = method.model
  out = hand.forward(model, jnp.zeros((n, 45)))
  kp = np.asarray(conventions.keypoints(model, out.vertices, out.joints, "openpose"))
  xyz = kp + np.array([0.0, 0.0, 0.4])
  batch = {
    "images": jnp.asarray(rng.normal(size=(n, 1, 1, SIZE, SIZE, 3)), jnp.float32),
    "K": jnp.broadcast_to(K, (n, 1, 1, 3, 3)),
    "T_cam_world": jnp.broadcast_to(jnp.eye(4), (n, 1, 1, 4, 4)),
    "xyz": jnp.asarray(xyz[:, None], jnp.float32),
    "uv": jnp.asarray(rng.uniform(0, SIZE, (n, 1, 1, 21, 2)), jnp.float32),
    "hand_mask": jnp.asarray(rng.uniform(size=(n, 1, 1, SIZE, SIZE)) > 0.5, jnp.float32),
    "image_id": jnp.arange(n),
    "mask": jnp.ones((n,)),
  }
  params, extra = jax.jit(method.init)(jax.random.key(0), batch)
  lab = np.asarray(method.labelled(batch))
  assert 0 < lab.sum() < n  # tiny: half the images

  def loss(xyz, uv):
    b = dict(batch, xyz=xyz, uv=uv)
    return method.loss_fn(params, extra, b, jax.random.key(1), 10)[0]

  gx, gu = jax.jit(jax.grad(loss, argnums=(0, 1)))(batch["xyz"], batch["uv"])
  assert np.all(np.asarray(gx)[lab == 0] == 0) and np.all(np.asarray(gu)[lab == 0] == 0)
  assert np.abs(np.asarray(gx)[lab == 1]).sum() > 0


def test_labelled_mask_is_a_fixed_share():
  ids = jnp.arange(20000)
  sel = np.asarray(subsets.labelled_mask(ids, 0.25, seed=3))
  assert abs(sel.mean() - 0.25) < 0.02
  np.testing.assert_array_equal(sel, np.asarray(subsets.labelled_mask(ids, 0.25, seed=3)))
  assert (sel != np.asarray(subsets.labelled_mask(ids, 0.25, seed=4))).any()


def test_palm_angle_known_answers():
  model = hand.load("open")
  out = hand.forward(model, jnp.zeros(45))
  kp = conventions.keypoints(model, out.vertices, out.joints, "openpose")  # palm faces -y
  centre = jnp.mean(kp[jnp.asarray(viewpoint.PALM)], 0)

  def seen_from(direction, side="right", kp=kp):
    cam = centre + 0.5 * jnp.asarray(direction, jnp.float32)
    return float(viewpoint.palm_angle(kp - cam, side))  # camera axes aligned with the hand's

  assert seen_from([0, -1, 0]) < 25  # below: the palm
  assert seen_from([0, 1, 0]) > 155  # above: the back
  assert 70 < seen_from([0, 0, 1]) < 110  # the pinky's side
  mirrored = kp * jnp.asarray([1.0, 1.0, -1.0])  # a left hand, palm still facing -y
  assert seen_from([0, -1, 0], "left", mirrored) < 25
  masks = viewpoint.bin_masks(jnp.asarray([0.0, 44.9, 45.0, 180.0]))
  np.testing.assert_array_equal(np.argmax(np.asarray(masks), 0), [0, 0, 1, 3])


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("cycle.max_angle", 0.0, "cycle.max_angle"),
    ("cycle.max_angle", 270.0, "cycle.max_angle"),
    ("loss.cycle", -1.0, "loss.cycle"),
    ("loss.photo", float("nan"), "loss.photo"),
    ("loss.temperature", 0.0, "loss.temperature"),
    ("data.labelled_fraction", 1.5, "data.labelled_fraction"),
    ("texture", "paint", "texture"),
    ("renderer", "raytrace", "renderer"),
    ("model.pool", "max", "model.pool"),
    ("model.stem_stride", 3, "model.stem_stride"),
    ("model.keypoint_stride", 32, "model.keypoint_stride"),
    ("loss.sup_heatmap", 1.0, "model.keypoints=True"),
  ],
)
def test_invalid_config_names_the_key(key, value, match):
  config = cyclehand_config.get_config("tiny")
  node, leaf = config, key.split(".")
  for part in leaf[:-1]:
    node = node[part]
  node[leaf[-1]] = value
  with pytest.raises(cyclehand.ConfigError, match=match):
    cyclehand.CycleHand(config)


def test_uv_texture_without_uvs_is_refused_with_the_fix(tmp_path):
  with np.load(hand.model.ASSETS / "open_hand_right.npz") as z:
    arrays = {k: z[k] for k in z.files if k != "face_uv"}
  path = tmp_path / "no_uv.npz"
  np.savez(path, **arrays)
  config = cyclehand_config.get_config("tiny")
  config.hand.model = str(path)
  with pytest.raises(cyclehand.ConfigError, match="texture=vertex"):
    cyclehand.CycleHand(config)
  config.texture = "vertex"
  assert cyclehand.CycleHand(config).look.face_uv.shape[-2:] == (3, 2)


def test_the_ground_truth_as_prediction_places_the_labelled_hand_exactly(method):
  """The data's pose, shape and root as the network's output: every keypoint lands on the
  labels (camera frame, 2D) and the supervised and cycle losses are 0."""
  batch = clip_batch()
  n, size = batch["images"].shape[0], batch["images"].shape[-2]
  R = single_image.gt_rotations(batch)
  gt = single_image.gt_cam(batch)
  K = batch["K"].reshape(n, 3, 3)
  from handflow.geometry import cameras

  uv_root, _ = cameras.project(K, gt[:, :1])
  scale = K[:, 0, 0] / (size * gt[:, 0, 2])  # crop units per metre at the root's depth
  c0 = np.log(np.expm1(mano_head.CAMERA_INIT[0]))
  camera = jnp.stack(
    [jnp.log(jnp.expm1(0.2 * scale)) - c0, *((uv_root[:, 0] + 0.5).T / size - 0.5)], -1
  )
  betas = single_image.BETA_MAX * jnp.arctanh(batch["betas"] / single_image.BETA_MAX)
  net = _net_output(n, jax.random.key(0), method.model)
  net = net.__class__(**{**net.__dict__, "mano": mano_head.ManoParams(
    rotations.matrix_to_rot6d(R) - mano_head.IDENTITY_6D, betas, camera)})  # fmt: skip
  h = method.place(net, K, size)
  np.testing.assert_allclose(h.joints, gt, atol=2e-5)
  uv, _ = cameras.project(K, h.joints)
  np.testing.assert_allclose(uv, batch["uv"].reshape(n, 21, 2), atol=2e-2)
  np.testing.assert_allclose(cl.joint_l1_cm(h.joints, gt), 0.0, atol=1e-3)
  rot = cl.random_rotations(jax.random.key(2), n, np.pi / 2)
  np.testing.assert_allclose(method.cycle_loss(h, h, jnp.broadcast_to(jnp.eye(3), (n, 3, 3))),
                             0.0, atol=1e-3)  # fmt: skip
  assert np.all(np.asarray(method.cycle_loss(h, h, rot)) > 0)  # c = a is not a rotated
  # The palm angle of the prediction is the ground truth's.
  np.testing.assert_allclose(viewpoint.palm_angle(h.joints), viewpoint.palm_angle(gt), atol=1e-2)


def test_silhouette_loss_prefers_the_true_hand(method):
  """The soft render of the data's own hand overlaps the dataset's hand mask (soft IoU loss
  < 0.25), the same hand shifted by 2 cm does not."""
  batch = clip_batch(size=64)
  n, size = batch["images"].shape[0], batch["images"].shape[-2]
  from handflow.data import crops

  rgb = crops.denormalise(batch["images"].reshape(n, size, size, 3))
  mask = batch["hand_mask"].reshape(n, size, size)
  assert mask.mean() > 0.05
  gt_verts = _world_verts(method, batch)
  K = batch["K"].reshape(n, 3, 3)
  light = _light(n)
  albedo = jnp.broadcast_to(
    jnp.asarray(cyclehand_scene.SKIN_TONE), (method.model.faces.shape[0], 3, 3)
  )

  def losses(shift):
    v = gt_verts + jnp.asarray([shift, 0.0, 0.0])
    rgb_r, sil = jax.vmap(lambda vv, k, lt, bg: hand_render.render_soft(
      vv, method.model.faces, k, (size, size), albedo, lt, bg))(v, K, light, rgb)  # fmt: skip
    return float(jnp.mean(cl.soft_iou_loss(sil, mask)))

  assert losses(0.0) < 0.25 < losses(0.02)


def _world_verts(method, batch):
  from handflow.geometry import cameras

  n = batch["images"].shape[0]
  out = hand.forward(method.model, batch["hand_pose"][:, 0], batch["betas"],
                     batch["global_orient"][:, 0], batch["transl"][:, 0])  # fmt: skip
  return cameras.transform(batch["T_cam_world"].reshape(n, 4, 4), out.vertices)


def test_tiny_config_lowers_its_loss_in_a_few_steps(method):
  """Every term on (cycle, photometric, contrastive, mechanical, supervised), one batch, a
  fixed key: 12 Adam steps lower the loss, and every gradient stays finite."""
  import optax

  batch = clip_batch(views=4)
  params, extra = jax.jit(method.init)(jax.random.key(0), batch)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    (loss, (metrics, _)), g = jax.value_and_grad(method.loss_fn, has_aux=True)(
      p, extra, batch, jax.random.key(1), 10
    )
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)]))
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss, finite, metrics

  losses = []
  for _ in range(12):
    params, state, loss, finite, metrics = step(params, state)
    assert bool(finite)
    losses.append(float(loss))
  assert all(np.isfinite(float(metrics[f"loss/{k}"])) for k in cyclehand.LOSS_TERMS if
             f"loss/{k}" in metrics)  # fmt: skip
  assert {"loss/cycle", "loss/photo", "loss/contrastive", "loss/sup3d"} <= set(metrics)
  assert losses[-1] < 0.8 * losses[0], losses


def test_flatten_pool_keeps_the_map_cells_apart():
  """pool="flatten": one projection per cell of the stride-16 map, flattened; the same image
  shifted by a cell gives another feature (a global average of a padded map barely moves)."""
  net = hand_pose_net.HandPoseNet(
    backbone_depth=10, backbone_width=8, feature_dim=16, hidden=16, num_betas=5,
    texture_latent=4, texture_resolution=8, proj_dim=8, pool="flatten", pool_stride=16,
    pool_channels=4,
  )  # fmt: skip
  img = jnp.zeros((2, 64, 64, 3)).at[0, 8:24, 8:24].set(2.0).at[1, 40:56, 40:56].set(2.0)
  # Jitted: op-by-op, the init and apply of even this small net took ~45 s on 2 cores.
  params = jax.jit(net.init)({"params": jax.random.key(0), "texture": jax.random.key(1)}, img[:1])
  assert params["params"]["global"]["kernel"].shape == (4 * 4 * 4, 16)
  out = jax.jit(net.apply)(params, img)
  assert out.mano.rot6d_delta.shape == (2, 16, 6) and np.isfinite(out.feature).all()
  assert out.log_heatmap is None  # no keypoint head (tests/models/test_heatmaps.py)
  assert np.abs(out.feature[0] - out.feature[1]).max() > 1e-3


def test_sharp_renders_skip_the_re_rendering_when_render_a_exists():
  config = cyclehand_config.get_config("tiny")
  assert cyclehand.CycleHand(config).sharp_renders() == ("(b)",)
  config.loss.photo = config.loss.silhouette = 0.0
  assert cyclehand.CycleHand(config).sharp_renders() == ("(b)", "the re-rendering")
  config.loss.cycle = config.loss.cycle_photo = config.loss.contrastive = 0.0
  assert cyclehand.CycleHand(config).sharp_renders() == ()


def test_self_plan_names_each_term_its_weights_switch_on():
  w = dict.fromkeys(cyclehand.SELF_TERMS, 0.0)
  plan = lambda **on: cyclehand.SelfPlan.from_weights({**w, **on})
  assert plan().term_names(True) == () and plan().sharp_renders() == ()
  p = plan(silhouette=1.0, contrastive=1.0)  # the silhouette term renders (a): reused
  assert p.term_names(True) == ("photo", "silhouette", "contrastive")
  assert p.term_names(False) == ("photo", "contrastive") and not p.rerender
  p = plan(cycle_photo=1.0, contrastive=1.0)  # d's render needs the cycle's network pass
  assert p.term_names(True) == ("cycle", "cycle_photo", "contrastive")
  assert p.sharp_renders() == ("(b)", "the re-rendering")
