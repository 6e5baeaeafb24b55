"""torchvision ResNet state dicts -> the backbone's parameters (names, shapes, kernel layout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from handflow import finetune
from handflow.models import convert_torchvision, resnet


def _torchvision_resnet18(rng):
  """A state dict in torchvision's resnet18 layout (names and shapes as torchvision writes
  them), with random values."""
  sd = {"conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.bias": (64,)}
  sd.update({"bn1.running_mean": (64,), "bn1.running_var": (64,), "fc.weight": (1000, 512)})
  cin = 64
  for i, ch in enumerate((64, 128, 256, 512)):
    for j in range(2):
      p = f"layer{i + 1}.{j}"
      sd[f"{p}.conv1.weight"] = (ch, cin if j == 0 else ch, 3, 3)
      sd[f"{p}.conv2.weight"] = (ch, ch, 3, 3)
      for k in (1, 2):
        sd[f"{p}.bn{k}.weight"] = sd[f"{p}.bn{k}.bias"] = (ch,)
      if j == 0 and i > 0:
        sd[f"{p}.downsample.0.weight"] = (ch, cin, 1, 1)
        sd[f"{p}.downsample.1.weight"] = sd[f"{p}.downsample.1.bias"] = (ch,)
    cin = ch
  return {k: rng.normal(size=s).astype(np.float32) for k, s in sd.items()}


def test_resnet18_loads_into_the_backbone_with_every_conv_and_norm():
  sd = _torchvision_resnet18(np.random.default_rng(0))
  tree = convert_torchvision.convert(sd, 18)
  net = resnet.ResNet(depth=18, width=64, out_stride=8, features=32)
  params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params)
  new, report = finetune.load(params, tree, {})
  # Every stem and block conv / norm leaf loaded; only the pyramid (after the stem) is fresh.
  top = {p.split("/")[0] for p in report.fresh}
  assert top and all(not t.startswith("BasicBlock") for t in top), top
  assert not top & {"Conv_0", "GroupNorm_0"}
  assert not report.unused
  # OIHW -> HWIO: output channel o, input i, tap (y, x) keeps its value.
  k = new["BasicBlock_2"]["Conv_0"]["kernel"]  # layer2.0.conv1
  np.testing.assert_array_equal(k[1, 2, 5, 7], sd["layer2.0.conv1.weight"][7, 5, 1, 2])
  np.testing.assert_array_equal(new["GroupNorm_0"]["scale"], sd["bn1.weight"])
  np.testing.assert_array_equal(
    new["BasicBlock_2"]["Conv_2"]["kernel"][0, 0], sd["layer2.0.downsample.0.weight"][:, :, 0, 0].T
  )


def test_missing_or_misshapen_tensors_are_named():
  sd = _torchvision_resnet18(np.random.default_rng(0))
  del sd["layer3.1.bn2.bias"]
  with pytest.raises(KeyError, match="layer3.1.bn2.bias"):
    convert_torchvision.convert(sd, 18)
  sd = _torchvision_resnet18(np.random.default_rng(0))
  sd["conv1.weight"] = sd["conv1.weight"][0]
  with pytest.raises(ValueError, match="'conv1.weight' has shape"):
    convert_torchvision.convert(sd, 18)


def test_nest_places_the_tree_at_the_prefix():
  assert convert_torchvision.nest({"a": 1}, "x/y") == {"x": {"y": {"a": 1}}}


def test_written_checkpoint_is_what_init_from_reads(tmp_path):
  from handflow import checkpoint

  tree = convert_torchvision.nest(
    convert_torchvision.convert(_torchvision_resnet18(np.random.default_rng(1)), 18), "net/backbone"
  )
  convert_torchvision.write(tree, tmp_path / "ck", "resnet18.pth")
  back = checkpoint.Checkpointer(tmp_path / "ck").restore_params(0)
  np.testing.assert_array_equal(
    back["params"]["net"]["backbone"]["Conv_0"]["kernel"],
    tree["net"]["backbone"]["Conv_0"]["kernel"],
  )
