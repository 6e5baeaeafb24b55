"""handflow: self-supervised 3D hand pose and mesh estimation in JAX."""

import sys as _sys

# distrax imports tensorflow_probability's JAX substrate. If TensorFlow is already imported at
# that moment, tensorflow_probability's top-level package also loads its TensorFlow-backed parts,
# which need the tf_keras package (and would pull the full TensorFlow in). handflow needs only
# the JAX substrate, which never imports TensorFlow: import it with TensorFlow hidden.
_tf = _sys.modules.pop("tensorflow", None)
try:
  import tensorflow_probability.substrates.jax  # noqa: F401
finally:
  if _tf is not None:
    _sys.modules["tensorflow"] = _tf
del _tf
