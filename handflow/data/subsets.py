"""Fixed subsets of a dataset's images, the same in the input pipeline and in the losses.

`labelled_mask(image_id, fraction, seed)`: the labelled share of single images (CycleHand's and
HandMIM's `data.labelled_fraction`): a hash of (image_id, seed), so the subset does not depend
on the order, the host or the step that reads an image. NumPy and jnp arrays alike.
"""

from __future__ import annotations

import numpy as np


def labelled_mask(image_id, fraction: float, seed: int = 0):
  """[n] bool: image_id [n] int in the labelled subset, a fixed share `fraction` of all images
  chosen by a hash of (id, seed) (the same images in every run and step)."""
  x = (image_id.astype(np.uint32) + np.uint32(seed * 0x9E3779B9 % 2**32)) * np.uint32(2654435761)
  x = x ^ (x >> 16)
  x = x * np.uint32(0x45D9F3B)
  x = x ^ (x >> 16)
  return (x.astype(np.float32) / 4294967296.0) < fraction
