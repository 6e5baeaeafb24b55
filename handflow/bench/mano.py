"""Hand-model kernel throughput: meshes/s, forward and forward+grad, against smplx.

  python -m handflow.bench.mano [--batch=1,64,1024,8192] [--mano=/path/MANO_RIGHT.pkl]

For a MANO-shaped model (the user's MANO file if given, else random arrays of MANO's shapes,
which cost the same) and the open hand, at each batch size: meshes/s of the jitted forward pass
(vertices + joints from axis-angle pose, shape, global rotation and translation) and of forward
+ gradient with respect to pose and shape; the achieved GFLOP/s (XLA's cost analysis) as a share
of a measured float32 GEMM peak. When `torch` and `smplx` are installed (`pip install
torch==2.13.0 smplx`), smplx's MANO layer runs on the same model in the same process and the
table gives the speed ratio. Writes bench_results/mano.json.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from handflow.bench import common
from handflow.hand import kernel, loader, mano_file
from handflow.hand.testing import random_mano_arrays


def _inputs(model, b, seed=0):
  rng = np.random.default_rng(seed)
  return (
    jnp.asarray(rng.normal(0, 0.3, (b, 45)), jnp.float32),
    jnp.asarray(rng.normal(0, 1.0, (b, model.num_betas)), jnp.float32),
    jnp.asarray(rng.normal(0, 0.5, (b, 3)), jnp.float32),
    jnp.asarray(rng.normal(0, 0.1, (b, 3)), jnp.float32),
  )


def jax_passes(model, b):
  """{pass: (jitted fn, unblocked jitted fn for FLOP counting)} and their inputs."""
  args = _inputs(model, b)

  def passes(chunk_size):
    fwd = jax.jit(lambda p, s, o, t: kernel.forward(model, p, s, o, t, chunk_size=chunk_size))

    def loss(p, s, o, t):
      out = kernel.forward(model, p, s, o, t, chunk_size=chunk_size)
      return jnp.sum(out.vertices**2) + jnp.sum(out.joints**2)

    return {"forward": fwd, "forward+grad": jax.jit(jax.grad(loss, argnums=(0, 1)))}

  # XLA's cost analysis counts a loop body once, so FLOPs come from the unblocked program.
  flops = {k: common.jax_flops(f, *args) for k, f in passes(None).items()}
  return passes(-1), flops, args


def smplx_passes(pkl_path, b):
  import smplx
  import torch

  layer = smplx.MANO(
    model_path=str(pkl_path), is_rhand=True, use_pca=False, flat_hand_mean=True, batch_size=b
  )
  rng = np.random.default_rng(0)
  pose = torch.tensor(rng.normal(0, 0.3, (b, 45)), dtype=torch.float32)
  betas = torch.tensor(rng.normal(0, 1.0, (b, 10)), dtype=torch.float32)
  orient = torch.tensor(rng.normal(0, 0.5, (b, 3)), dtype=torch.float32)
  transl = torch.tensor(rng.normal(0, 0.1, (b, 3)), dtype=torch.float32)

  def fwd():
    with torch.no_grad():
      layer(hand_pose=pose, betas=betas, global_orient=orient, transl=transl)

  p = pose.clone().requires_grad_(True)
  s = betas.clone().requires_grad_(True)

  def fwd_grad():
    out = layer(hand_pose=p, betas=s, global_orient=orient, transl=transl)
    loss = (out.vertices**2).sum() + (out.joints**2).sum()
    p.grad = s.grad = None
    loss.backward()

  return {"forward": fwd, "forward+grad": fwd_grad}


def bench(model, b, peak, pkl=None):
  """Rows for one model and batch size; smplx timed interleaved with handflow when given."""
  fns, flops, args = jax_passes(model, b)
  ref = smplx_passes(pkl, b) if pkl is not None else {}
  contenders = {
    ("handflow", k): (lambda f=f: jax.block_until_ready(f(*args))) for k, f in fns.items()
  }
  contenders.update({("smplx", k): f for k, f in ref.items()})
  best = common.time_interleaved(contenders, rounds=5 if b >= 4096 else 9)
  rows = []
  for name in fns:
    sec = best[("handflow", name)]
    gflops = flops[name] / sec / 1e9
    row = dict(
      pass_=name, batch=b, meshes_s=b / sec, ms=sec * 1e3, gflops=gflops, roofline=gflops / peak
    )
    if ("smplx", name) in best:
      row["smplx_meshes_s"] = b / best[("smplx", name)]
      row["speedup"] = row["meshes_s"] / row["smplx_meshes_s"]
    rows.append(row)
  return rows


def _smplx_available():
  try:
    import smplx  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", default="1,64,1024,8192")
  parser.add_argument("--mano", default=None, help="official MANO_RIGHT.pkl (optional)")
  parser.add_argument("--no-smplx", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batch.split(",")]

  tmp = tempfile.TemporaryDirectory()
  if args.mano:
    pkl = pathlib.Path(args.mano)
    mano = mano_file.load_mano(pkl)
  else:
    # smplx reads a plain pickle of numpy arrays; handflow reads the same file.
    pkl = pathlib.Path(tmp.name) / "MANO_RIGHT.pkl"
    arrays = random_mano_arrays()
    from scipy import sparse

    arrays["J_regressor"] = sparse.csc_matrix(arrays["J_regressor"])
    pkl.write_bytes(pickle.dumps(arrays, protocol=2))
    mano = mano_file.load_mano(pkl)
  models = {"mano-shaped": mano, "open_hand": loader.load("open")}
  use_smplx = not args.no_smplx and _smplx_available()

  peak = common.matmul_peak_gflops()
  print(f"device: {common.machine()}; measured f32 GEMM peak {peak:.1f} GFLOP/s")
  if not use_smplx:
    print("smplx/torch not installed (pip install torch==2.13.0 smplx): no reference column")
  rows = []
  for mname, model in models.items():
    for b in batches:
      ref_pkl = pkl if use_smplx and mname == "mano-shaped" else None
      try:
        new = bench(model, b, peak, ref_pkl)
      except Exception as e:  # noqa: BLE001 - e.g. out of memory at the largest batch.
        print(f"{mname} B={b}: skipped ({type(e).__name__}: {str(e)[:80]})")
        continue
      for r in new:
        r["model"] = mname
        print(f"  {mname} {r['pass_']} B={b}: {r['meshes_s']:,.0f} meshes/s", flush=True)
      rows.extend(new)
  print()
  common.print_table(
    rows,
    [
      ("model", "model", "{}"),
      ("pass_", "pass", "{}"),
      ("batch", "B", "{}"),
      ("meshes_s", "meshes/s", "{:,.0f}"),
      ("ms", "ms/call", "{:.3f}"),
      ("gflops", "GFLOP/s", "{:.1f}"),
      ("roofline", "of peak", "{:.0%}"),
      ("smplx_meshes_s", "smplx meshes/s", "{:,.0f}"),
      ("speedup", "x smplx", "{:.2f}"),
    ],
  )
  path = common.write_json(
    "mano", {"machine": common.machine(), "matmul_peak_gflops": peak, "rows": rows}, args.out
  )
  print(f"\nwrote {path}")
  tmp.cleanup()


if __name__ == "__main__":
  main()
