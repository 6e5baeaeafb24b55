"""ImageNet ResNet weights from torchvision for handflow's backbone, as an `init_from` checkpoint.

  python -m handflow.models.convert_torchvision --weights=resnet50-11ad3fa6.pth --depth=50 \\
      --out=/ckpt/resnet50_imagenet [--prefix=hypothesis_net/params/backbone]
  python -m handflow.main --config=configs/ust.py:hanco --workdir=DIR \\
      --config.init_from.workdir=/ckpt/resnet50_imagenet

torch is needed only to read the `.pth` file (`pip install torch`); `convert(state_dict, depth)`
itself takes NumPy arrays. Mapping (`models.resnet`): torchvision's `conv1`, `bn1`,
`layer{i}.{j}.conv{k}` / `bn{k}` / `downsample.{0,1}` become `Conv_0`, `GroupNorm_0`,
`{BasicBlock,Bottleneck}_{n}/Conv_{k-1}` / `GroupNorm_{k-1}` / `Conv_{last}`, `GroupNorm_{last}`
(kernels OIHW -> HWIO). handflow's backbone uses GroupNorm (no running statistics to sync
across hosts): BatchNorm's scale and bias are copied and its running statistics dropped, the
usual transfer to GroupNorm models (fine-tuning recovers the difference). The feature pyramid
and the heads have no ImageNet counterpart and start fresh (`finetune` reports them). The
width must be torchvision's (64).
"""

from __future__ import annotations

import numpy as np

from handflow.models import resnet


def _block_names(depth: int):
  """[(torch prefix, flax block name)] in order."""
  block = "Bottleneck" if depth >= 50 else "BasicBlock"
  out, n = [], 0
  for i, count in enumerate(resnet.STAGES[depth]):
    for j in range(count):
      out.append((f"layer{i + 1}.{j}", f"{block}_{n}"))
      n += 1
  return out


def convert(state_dict: dict, depth: int) -> dict:
  """torchvision ResNet state dict (name -> array) -> the backbone's parameter subtree {name:
  {kernel | scale | bias}}. A missing or misshapen tensor raises naming it."""
  if depth not in (18, 34, 50):
    raise ValueError(f"torchvision ships ResNet-18/34/50 here, not depth {depth}")
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}

  def get(name, ndim):
    if name not in sd:
      raise KeyError(f"torchvision state dict has no '{name}'")
    if sd[name].ndim != ndim:
      raise ValueError(f"'{name}' has shape {sd[name].shape}, expected {ndim} dimensions")
    return sd[name]

  conv = lambda name: {"kernel": np.transpose(get(f"{name}.weight", 4), (2, 3, 1, 0))}
  norm = lambda name: {"scale": get(f"{name}.weight", 1), "bias": get(f"{name}.bias", 1)}
  tree = {"Conv_0": conv("conv1"), "GroupNorm_0": norm("bn1")}
  convs = 3 if depth >= 50 else 2
  for tprefix, fname in _block_names(depth):
    block = {}
    for k in range(convs):
      block[f"Conv_{k}"] = conv(f"{tprefix}.conv{k + 1}")
      block[f"GroupNorm_{k}"] = norm(f"{tprefix}.bn{k + 1}")
    if f"{tprefix}.downsample.0.weight" in sd:
      block[f"Conv_{convs}"] = conv(f"{tprefix}.downsample.0")
      block[f"GroupNorm_{convs}"] = norm(f"{tprefix}.downsample.1")
    tree[fname] = block
  return tree


def nest(tree: dict, prefix: str) -> dict:
  """{...} placed at `prefix` ("a/b/c" -> {"a": {"b": {"c": tree}}})."""
  for key in reversed([p for p in prefix.split("/") if p]):
    tree = {key: tree}
  return tree


def write(tree: dict, out, source: str = ""):
  """A checkpoint at `out` whose `params` item is {"params": tree}: what `init_from` reads."""
  from handflow import checkpoint

  ckpt = checkpoint.Checkpointer(out, max_to_keep=1)
  ckpt.save(0, state={"step": np.zeros((), np.int32)}, params={"params": tree},
            meta={"source": source}, force=True)  # fmt: skip
  ckpt.close()


def main(argv=None) -> int:
  import argparse

  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--weights", required=True, help="torchvision .pth state dict")
  ap.add_argument("--depth", type=int, required=True, choices=(18, 34, 50))
  ap.add_argument("--out", required=True, help="checkpoint directory for init_from.workdir")
  ap.add_argument("--prefix", default="hypothesis_net/params/backbone")
  args = ap.parse_args(argv)
  import torch  # only here: reading the .pth

  state = torch.load(args.weights, map_location="cpu", weights_only=True)
  tree = nest(convert({k: v.numpy() for k, v in state.items()}, args.depth), args.prefix)
  write(tree, args.out, args.weights)
  print(f"wrote {args.out} (step 0): {args.prefix} from {args.weights}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
