"""Frozen config dataclasses to and from JSON, and the `model.json` of a work dir.

Every model family describes itself with one frozen dataclass whose class
attribute `FAMILY` names the family. A training run writes that config as
`<workdir>/model.json`, human-readable and independent of gin, so loading a
model needs neither the run's gin files nor gin's global state. Paths may be
local or cloud URIs (gs://...).
"""
from collections import abc
import dataclasses
import json
import types
import typing
from etils import epath

from soundlm.io import paths

MODEL_FILE = "model.json"
FORMAT_VERSION = 1


def to_dict(config) -> dict:
  """A (nested) config dataclass as plain JSON values."""
  if not dataclasses.is_dataclass(config):
    raise TypeError(f"expected a config dataclass, got {type(config).__name__}")
  return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value):
  if dataclasses.is_dataclass(value):
    return to_dict(value)
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def from_dict(cls, values: dict):
  """`cls(**values)` with nested dataclasses and tuples rebuilt; unknown or
  missing fields are refused by name."""
  if not isinstance(values, dict):
    raise ValueError(f"{cls.__name__}: expected a JSON object, got {values!r}")
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
  missing = sorted(name for name, f in fields.items()
                   if name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
  if missing:
    raise ValueError(f"{cls.__name__}: missing field(s) {missing}")
  return cls(**{name: _typed(hints[name], value) for name, value in values.items()})


def _typed(hint, value):
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    return value if value is None or len(options) != 1 else _typed(options[0], value)
  if dataclasses.is_dataclass(hint):
    return from_dict(hint, value)
  if isinstance(value, list) and (hint is tuple or origin in (tuple, abc.Sequence)):
    return tuple(value)
  return value


def write(workdir: str, config) -> None:
  """Writes `<workdir>/model.json` for `config` (atomically: temp file + rename)."""
  family = getattr(type(config), "FAMILY", None)
  if family is None:
    raise TypeError(f"{type(config).__name__} names no FAMILY; it is not a model config")
  record = {"format": FORMAT_VERSION, "family": family, "config": to_dict(config)}
  directory = epath.Path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  paths.write_whole(directory / MODEL_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read(workdir: str) -> tuple[str, dict]:
  """(family, config values) recorded in `<workdir>/model.json`."""
  path = epath.Path(workdir) / MODEL_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist: {workdir} is not the work dir of a model trained by "
        "`soundlm train`, or it was written before work dirs recorded their model. "
        "To convert an older work dir, write its config once: "
        "`soundlm.configs.write(workdir, <Family>Config(...))` with the sizes it was "
        "trained with (see its config.gin).")
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON: {error}") from error
  if record.get("format") != FORMAT_VERSION or "family" not in record:
    raise ValueError(f"{path}: unsupported model file (format {record.get('format')!r}, "
                     f"expected {FORMAT_VERSION} with a 'family')")
  return record["family"], record["config"]

