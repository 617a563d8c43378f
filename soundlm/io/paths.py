"""Files that may live in an object store (gs://, s3://) as well as on disk.

A store has no append and no atomic rename (a rename is a copy), but an
upload replaces an object whole or not at all; a file system has the
opposite. `write_whole` gives the same guarantee on both: a reader sees the
old contents or the new, never half a file.
"""
import os

from etils import epath


def in_object_store(path) -> bool:
  """Whether `path` names an object in a store (a URI), not a local file."""
  return "://" in os.fspath(path)


def absolute(path) -> str:
  """`path` as orbax needs it: a URI as given, a local path made absolute
  (against the current directory), so a relative work dir loads."""
  path = os.fspath(path)
  return path if in_object_store(path) else os.path.abspath(path)


def write_whole(path, data: bytes | str) -> None:
  """Replaces the file at `path` with `data` at once: uploaded directly to an
  object store; on a file system written to a hidden temporary file beside it,
  flushed to disk, then renamed over it."""
  path = epath.Path(path)
  data = data.encode() if isinstance(data, str) else data
  if in_object_store(path):
    path.write_bytes(data)
    return
  temporary = path.parent / f".{path.name}.tmp"
  with open(temporary, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)
