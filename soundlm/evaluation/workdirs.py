"""Checks of the work dirs an evaluation is given, with errors that name the flag."""
from etils import epath

from soundlm import configs
from soundlm import models


def family(path: str, flag: str) -> str:
  """The model family recorded in the work dir `path` (given as `flag`)."""
  if not epath.Path(path).is_dir():
    raise FileNotFoundError(f"{flag}: work dir {path} does not exist")
  try:
    name, _ = configs.read(path)
  except FileNotFoundError as error:
    raise FileNotFoundError(f"{flag}: {error}") from error
  if name not in models.FAMILIES:
    raise ValueError(f"{flag}: {path} holds an unknown model family {name!r}")
  return name


def check(path: str, expected: str, flag: str) -> str:
  """`path` if it is a work dir of the `expected` family, else a clear error."""
  found = family(path, flag)
  if found != expected:
    raise ValueError(f"{flag}: {path} holds a {found!r} model, not a {expected!r} model")
  return path


def check_file(path: str, flag: str, what: str) -> str:
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"{flag}: {what} {path} does not exist")
  return path
