import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow.models import vit

CFG = vit.variant("Mu/8", width=32, depth=2, heads=2, mlp_dim=64)


@pytest.fixture(scope="module")
def net_params():
  net = vit.ViT(**CFG)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  return net, net.init(jax.random.key(1), x), x


def test_variants_parse_and_bad_ones_are_named():
  assert vit.variant("S/16") == dict(width=384, depth=12, mlp_dim=1536, heads=6, patch=16)
  assert vit.variant("B/16", depth=2)["depth"] == 2
  for bad in ("L/16", "S16", "S/x"):
    with pytest.raises(vit.ViTConfigError, match=bad.replace("/", "/")):
      vit.variant(bad)
  with pytest.raises(vit.ViTConfigError, match="divisible"):
    vit.variant("Mu/8", heads=3)


def test_outputs_and_parameter_names(net_params):
  net, params, x = net_params
  out = net.apply(params, x)
  assert out.tokens.shape == (2, 1 + 16, 32)
  assert len(out.layers) == 2 and out.layers[0].shape == (2, 17, 32)
  assert vit.patch_grid(out.tokens).shape == (2, 4, 4, 32)
  names = set(params["params"])
  expect = {"embedding", "cls", "mask_token", "pos_embedding", "blocks_0", "blocks_1", "norm"}
  assert expect <= names


def test_mask_token_replaces_exactly_the_masked_embeddings(net_params):
  """What a masked patch shows cannot reach the output (its embedding is replaced before the
  position embeddings); what an unmasked one shows does; an all-False mask is no mask."""
  net, params, x = net_params
  mask = np.zeros((2, 16), bool)
  mask[:, [0, 5, 6]] = True
  y = np.array(x)
  y[:, 8:16, 8:16] += 3.0  # patch (1, 1) = index 5: masked
  out_x = net.apply(params, x, jnp.asarray(mask)).tokens
  out_y = net.apply(params, jnp.asarray(y), jnp.asarray(mask)).tokens
  np.testing.assert_allclose(out_x, out_y, atol=1e-5)
  z = np.array(x)
  z[:, 8:16, 24:32] += 3.0  # patch (1, 3) = index 7: not masked
  assert np.abs(net.apply(params, jnp.asarray(z), jnp.asarray(mask)).tokens - out_x).max() > 1e-2
  np.testing.assert_allclose(
    net.apply(params, x, jnp.zeros((2, 16), bool)).tokens, net.apply(params, x).tokens, atol=1e-6
  )
  # The replaced embedding is the token plus the patch's position embedding: masking every
  # patch of two different images gives the same output.
  full = jnp.ones((2, 16), bool)
  out = net.apply(params, jnp.stack([x[0], -x[0]]), full).tokens
  np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_drop_path_is_off_at_eval_and_random_in_training(net_params):
  _, params, x = net_params
  net = vit.ViT(**CFG, drop_path=0.5)
  a = net.apply(params, x, train=True, rngs={"dropout": jax.random.key(0)}).tokens
  b = net.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)}).tokens
  assert np.abs(a - b).max() > 1e-3
  np.testing.assert_allclose(net.apply(params, x).tokens, vit.ViT(**CFG).apply(params, x).tokens)


def test_position_embedding_resampling_round_trips():
  g, d = 6, 8
  yy, xx = np.meshgrid(np.linspace(0, 1, g), np.linspace(0, 1, g), indexing="ij")
  smooth = np.stack([np.sin(0.5 * k * xx + 0.25 * k * yy) for k in range(d)], -1)
  pos = jnp.asarray(np.concatenate([np.full((1, d), 7.0), smooth.reshape(g * g, d)])[None])
  assert vit.resample_pos_embedding(pos, g) is pos
  big = vit.resample_pos_embedding(pos, 12)
  assert big.shape == (1, 1 + 144, d)
  np.testing.assert_array_equal(big[0, 0], pos[0, 0])  # [CLS] kept
  back = vit.resample_pos_embedding(big, g)
  np.testing.assert_allclose(back, pos, atol=0.03)
  # load(): a restored tree adapts to the target's grid; other leaves are untouched.
  restored = {"pos_embedding": np.asarray(big), "cls": np.ones((1, 1, d))}
  out = vit.load(restored, {"pos_embedding": np.zeros((1, 1 + g * g, d))})
  assert out["pos_embedding"].shape == (1, 1 + g * g, d) and out["cls"] is restored["cls"]
