import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from handflow.geometry import alignment


def official_align_w_scale(mtx1, mtx2):
  """The FreiHAND scorer's alignment (REFERENCE §2), gt = mtx1, pred = mtx2, in NumPy/scipy."""
  t1, t2 = mtx1.mean(0), mtx2.mean(0)
  m1, m2 = mtx1 - t1, mtx2 - t2
  s1, s2 = np.linalg.norm(m1) + 1e-8, np.linalg.norm(m2) + 1e-8
  m1, m2 = m1 / s1, m2 / s2
  r, s = orthogonal_procrustes(m1, m2)
  return (m2 @ r.T) * s * s1 + t1


def _pair(n=21, seed=0):
  rng = np.random.default_rng(seed)
  gt = rng.normal(0, 0.05, (n, 3))
  pred = gt + rng.normal(0, 0.01, (n, 3))
  return gt, pred


@pytest.mark.parametrize("seed", range(4))
def test_matches_official_scorer(seed):
  gt, pred = _pair(seed=seed)
  r = Rotation.random(random_state=seed).as_matrix()
  pred = 1.7 * pred @ r.T + [0.3, -0.1, 0.5]
  want = official_align_w_scale(gt, pred)
  got = alignment.procrustes(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_invariant_to_similarity_and_zero_when_perfect():
  gt, pred = _pair()
  base = alignment.procrustes(jnp.asarray(pred), jnp.asarray(gt))
  r = Rotation.random(random_state=7).as_matrix()
  moved = 0.4 * pred @ r.T + [1.0, 2.0, -3.0]
  np.testing.assert_allclose(
    alignment.procrustes(jnp.asarray(moved), jnp.asarray(gt)), base, atol=1e-5
  )
  perfect = alignment.procrustes(jnp.asarray(2.0 * gt @ r.T + 0.1), jnp.asarray(gt))
  np.testing.assert_allclose(perfect, gt, atol=1e-5)


def test_reflection_modes_differ_as_documented():
  gt, _ = _pair(seed=3)
  mirrored = gt * [-1.0, 1.0, 1.0]  # a reflection of the truth
  official = alignment.procrustes(jnp.asarray(mirrored), jnp.asarray(gt))
  proper = alignment.procrustes(jnp.asarray(mirrored), jnp.asarray(gt), allow_reflection=False)
  np.testing.assert_allclose(official, gt, atol=1e-5)  # the scorer undoes the reflection
  assert np.linalg.norm(np.asarray(proper) - gt, axis=-1).mean() > 0.01
  _, rot, _ = alignment.similarity_transform(
    jnp.asarray(mirrored), jnp.asarray(gt), allow_reflection=False
  )
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
  np.testing.assert_allclose(official, official_align_w_scale(gt, mirrored), atol=1e-5)


def test_batched_and_differentiable():
  gts, preds = zip(*(_pair(seed=s) for s in range(3)), strict=True)
  gt, pred = jnp.asarray(np.stack(gts)), jnp.asarray(np.stack(preds))
  got = jax.jit(alignment.procrustes)(pred, gt)
  for i in range(3):
    np.testing.assert_allclose(got[i], alignment.procrustes(pred[i], gt[i]), atol=1e-6)
  loss = lambda p: jnp.sum((alignment.procrustes(p, gt, allow_reflection=False) - gt) ** 2)
  assert np.isfinite(jax.grad(loss)(pred)).all()


def test_root_and_scale_root_alignment():
  gt, _ = _pair()
  pred = 1.3 * gt + [0.2, 0.0, -0.1]
  np.testing.assert_allclose(alignment.align_root(jnp.asarray(pred), jnp.asarray(gt), 9)[9], gt[9])
  hanco = alignment.align_scale_root(jnp.asarray(pred), jnp.asarray(gt), root=9, ref=(0, 9))
  np.testing.assert_allclose(hanco, gt, atol=1e-6)  # pure scale + translation is undone
  ho3d = alignment.align_scale_root(jnp.asarray(pred), jnp.asarray(gt), root=0, ref=(0, 4))
  np.testing.assert_allclose(ho3d, gt, atol=1e-6)
  flat = jnp.zeros((21, 3))
  np.testing.assert_allclose(
    alignment.align_scale_root(flat, jnp.asarray(gt), root=0, ref=(0, 4)),
    np.broadcast_to(gt[0], (21, 3)),
    atol=1e-7,
  )
