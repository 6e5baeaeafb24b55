"""handflow: self-supervised 3D hand pose and mesh estimation in JAX."""

import os as _os
import sys as _sys

# TensorFlow (tf.data, TFDS) logs from C++ at import, in every process it starts: warnings and
# errors only, unless the user's environment asks for more. Its oneDNN notice is logged before
# logging is set up (two lines per process, TF_CPP_MIN_LOG_LEVEL does not hide it); handflow
# runs no TF math that oneDNN speeds up (tf.data decodes and batches), so it is off by default.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

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
