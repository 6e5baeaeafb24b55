"""A MANO-shaped hand model with made-up values, for tests and benchmarks.

Same array shapes and tree as the official file (778 vertices, 1538 faces, 10 shape and 135
pose-blend directions), so it costs what MANO costs; the values are random around a hand-like
joint layout. It is not MANO and must never be used as a hand.
"""

from __future__ import annotations

import numpy as np

from handflow.hand.model import MANO_PARENTS


def random_mano_arrays(seed: int = 0) -> dict[str, np.ndarray]:
  """Arrays in the official pickle layout (keys as in MANO_RIGHT.pkl)."""
  rng = np.random.default_rng(seed)
  n, f = 778, 1538
  joints = np.zeros((16, 3))
  for finger in range(5):
    base = np.array([0.08, 0.0, -0.03 + 0.015 * finger])
    for k in range(3):
      joints[1 + 3 * finger + k] = base + [0.025 * k, 0.0, 0.0]
  owner = rng.integers(0, 16, n)
  v_template = joints[owner] + rng.normal(0, 0.008, (n, 3))
  weights = rng.dirichlet(np.full(16, 0.2), n)
  weights[np.arange(n), owner] += 2.0
  weights /= weights.sum(1, keepdims=True)
  j_reg = np.zeros((16, n))
  for j in range(16):
    ids = np.flatnonzero(owner == j)[:8]
    j_reg[j, ids] = rng.dirichlet(np.ones(len(ids)))
  comps, _ = np.linalg.qr(rng.normal(size=(45, 45)))
  return dict(
    v_template=v_template,
    shapedirs=rng.normal(0, 0.003, (n, 3, 10)),
    posedirs=rng.normal(0, 0.002, (n, 3, 135)),
    J_regressor=j_reg,
    weights=weights,
    kintree_table=np.stack([np.array([2**32 - 1, *MANO_PARENTS[1:]]), np.arange(16)]),
    f=np.stack([rng.choice(n, 3, replace=False) for _ in range(f)]).astype(np.uint32),
    hands_components=comps.T,
    hands_mean=rng.normal(0, 0.2, 45),
    hands_coeffs=rng.normal(size=(1554, 45)),
  )
