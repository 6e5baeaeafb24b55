"""Atomic file writes: a file appears whole or not at all (no half-written outputs)."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import IO


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> pathlib.Path:
  """Calls write(f) on a temporary file beside `path`, then renames it into place."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    # mkstemp makes the file private (0600); outputs get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
  return write_atomic(path, lambda f: f.write(text.encode()))


def write_bytes(path, data: bytes):
  """`data` to a local path atomically, or to an object store (gs://, s3://: an upload appears
  whole)."""
  if str(path).startswith(("gs://", "s3://")):
    import etils.epath

    etils.epath.Path(path).write_bytes(data)
  else:
    write_atomic(path, lambda f: f.write(data))


def unwritable(directory) -> str:
  """Why no file can be created in the existing `directory` ("" when one can): a temporary
  file is made and removed, so probing leaves nothing behind."""
  try:
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:
    return f"cannot write in {directory} ({e.strerror or type(e).__name__})"
  return ""
