"""Builds a SoundStream from gin files without disturbing the caller's gin configuration.

The named sizes are the files `gin/codec/<name>.gin` of the repository.
Parsing happens on a private copy of gin's bindings, so a process that has
its own configuration (say, a SoundStorm run that loads a codec) keeps it.
"""
import contextlib
import os
from typing import Sequence

import gin
import gin.config

from soundlm.codec import discriminators  # noqa: F401  (named in the codec gin files)
from soundlm.codec.model import SoundStream

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMED_CONFIGS = ("tiny", "paper_16khz", "paper_24khz")


def config_path(config: str) -> str:
  """A named size ('tiny', 'paper_16khz', 'paper_24khz') or a gin file path -> file path."""
  if config in NAMED_CONFIGS:
    return os.path.join(REPO_ROOT, "gin", "codec", f"{config}.gin")
  if os.path.isfile(config):
    return os.path.abspath(config)
  raise ValueError(f"config must be one of {NAMED_CONFIGS} or an existing gin file, "
                   f"got {config!r}")


@contextlib.contextmanager
def isolated_gin():
  """Runs the body on an empty gin configuration, then restores the caller's.

  gin has no public save/restore, so its binding tables are copied directly.
  """
  saved_config = {key: dict(values) for key, values in gin.config._CONFIG.items()}
  saved_imports = set(gin.config._IMPORTS)
  with gin.config._OPERATIVE_CONFIG_LOCK:
    saved_operative = {k: dict(v) for k, v in gin.config._OPERATIVE_CONFIG.items()}
  with gin.unlock_config():
    gin.config._CONFIG.clear()
    try:
      yield
    finally:
      gin.config._CONFIG.clear()
      gin.config._CONFIG.update(saved_config)
      gin.config._IMPORTS.clear()
      gin.config._IMPORTS.update(saved_imports)
      with gin.config._OPERATIVE_CONFIG_LOCK:
        gin.config._OPERATIVE_CONFIG.clear()
        gin.config._OPERATIVE_CONFIG.update(saved_operative)


def build_model(gin_files: Sequence[str], skip_unknown: bool = False) -> SoundStream:
  """SoundStream() as configured by `gin_files` alone (includes resolve from the repo root)."""
  cwd = os.getcwd()
  with isolated_gin():
    try:
      os.chdir(REPO_ROOT)
      gin.parse_config_files_and_bindings(list(gin_files), [], skip_unknown=skip_unknown)
    finally:
      os.chdir(cwd)
    return SoundStream()
