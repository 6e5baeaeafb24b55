import jax.numpy as jnp
import numpy as np
import pytest

from handflow.experiments import view_learning
from handflow.models import heatmaps


def test_soft_argmax_errors_read_a_peaked_heatmap_at_its_cell():
  """A heatmap that puts all its mass on cell (row 2, column 5) of an 8 x 8 map over a 32 px
  crop sits at pixel (5 * 4 + 1.5, 2 * 4 + 1.5): the cell's centre in the pixel-centre
  convention of `uv`."""
  logits = jnp.full((1, 8, 8, 21), -1e4).at[0, 2, 5, :].set(0.0)
  log_hm = heatmaps.log_probs(logits)
  np.testing.assert_allclose(jnp.exp(log_hm).sum((1, 2)), 1.0, rtol=1e-6)
  uv = jnp.broadcast_to(jnp.asarray([21.5, 9.5]), (1, 21, 2))
  np.testing.assert_allclose(view_learning.soft_argmax_errors(log_hm, uv, 32), 0.0, atol=1e-4)
  off = uv + jnp.asarray([3.0, 4.0])
  np.testing.assert_allclose(view_learning.soft_argmax_errors(log_hm, off, 32), 5.0, atol=1e-4)


def test_cells_parse_and_bad_names_are_refused():
  assert view_learning.parse_cell("lr3e-3") == (3e-3, 4)
  assert view_learning.parse_cell("stem2") == (1e-3, 2)
  with pytest.raises(ValueError, match="cell 'lrfast'"):
    view_learning.parse_cell("lrfast")


def test_table_lists_every_validation_row_with_images_seen():
  row = {"step": 500, "ce": 4.5, "px_mean": 12.0, "px_median": 10.0}
  row.update({f"px_{k}": 1.0 for k in view_learning.JOINTS})
  text = view_learning.table([{"cell": "lr1e-3", "images_per_step": 16, "curve": [row]}], "d")
  assert "| lr1e-3 | 500 | 8000 | 4.50 | 12.00 | 10.00 |" in text
