"""The ResNet backbone's strides: the standard stem and the stride-2 stem for small crops."""

import jax
import jax.numpy as jnp
import pytest

from handflow.models import resnet


@pytest.mark.parametrize("stem, out_stride", [(4, 8), (2, 2), (2, 16)])
def test_the_map_has_the_requested_stride_for_either_stem(stem, out_stride):
  net = resnet.ResNet(depth=10, width=4, out_stride=out_stride, features=6, stem_stride=stem)
  x = jnp.ones((1, 32, 32, 3))
  shapes = jax.eval_shape(lambda: net.init_with_output(jax.random.key(0), x))
  y, params = shapes
  assert y.shape == (1, 32 // out_stride, 32 // out_stride, 6)
  # The same stages (and parameters) either way: the stem drops its max pool, nothing else.
  other = resnet.ResNet(depth=10, width=4, out_stride=8, features=6, stem_stride=4)
  p_std = jax.eval_shape(lambda: other.init(jax.random.key(0), x))
  blocks = lambda p: {k: v for k, v in p["params"].items() if k.startswith("BasicBlock")}
  assert jax.tree.map(lambda a: a.shape, blocks(params)) == jax.tree.map(
    lambda a: a.shape, blocks(p_std)
  )


@pytest.mark.parametrize("stem, out_stride, match", [
  (3, 8, "model.stem_stride = 3"),
  (2, 32, "must be 2, 4, 8 or 16 with a stride-2 stem, got 32"),
  (4, 2, "must be 4, 8, 16 or 32 with a stride-4 stem, got 2"),
])  # fmt: skip
def test_bad_strides_are_refused_naming_them(stem, out_stride, match):
  net = resnet.ResNet(depth=10, width=4, out_stride=out_stride, features=6, stem_stride=stem)
  with pytest.raises(ValueError, match=match):
    net.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))
