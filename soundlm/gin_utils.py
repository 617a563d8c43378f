"""Gin plumbing shared by every entry point.

Names such as 'gin/runs/codec_tiny.gin' resolve inside the installed package
(`GIN_ROOT`), whatever the current directory, so a wheel and a checkout read
the same files. Entry points take T5X-style flags: `--gin_file`,
`--gin_bindings`, `--gin_search_paths` and `--gin.NAME=VALUE` (one binding
`NAME = VALUE`, e.g. `--gin.Trainer.num_steps=10`). Gin files declare the
modules that define their configurables with `import` lines, so parsing needs
nothing imported beforehand and a run's saved config.gin parses on its own.
`read_literals` reads literal settings from a file without touching gin's
global configuration, for code that must not disturb the program around it.
"""
import argparse
import logging
import pathlib
import re
import sys

import gin
from etils import epath
from gin import config_parser

from soundlm.io import paths

GIN_ROOT = pathlib.Path(__file__).resolve().parent
_search_paths: list[pathlib.Path] = []  # registered with gin, GIN_ROOT first
_GIN_FLAG = re.compile(r"--gin\.([^=\s]+)=(.+)", re.DOTALL)
_GIN_ERRORS = (ValueError, KeyError, NameError, TypeError, SyntaxError, IOError, ImportError)


class _ResourceReaderFilter(logging.Filter):
  """Drops the records of gin's package-resource reader: it logs an ERROR for
  every search path that lacks an included file, though a later one holds it
  (a file found nowhere still raises IOError)."""

  def filter(self, record):
    return record.module != "resource_reader"


_RESOURCE_READER_FILTER = _ResourceReaderFilter()


def register_search_paths(paths=()) -> None:
  """Adds GIN_ROOT and `paths` to where gin looks for files and includes
  (after the current directory); a path already there is not added twice."""
  logging.getLogger().addFilter(_RESOURCE_READER_FILTER)  # gin logs on the root logger
  for path in (GIN_ROOT, *paths):
    path = pathlib.Path(path).expanduser().absolute()
    if path not in _search_paths:
      gin.add_config_file_search_path(str(path))
      _search_paths.append(path)


def find(path, label: str = "gin file") -> pathlib.Path:
  """The file `path` as given (absolute, or relative to the current
  directory), else relative to GIN_ROOT and each registered search path."""
  given = pathlib.Path(path).expanduser()
  roots = [] if given.is_absolute() else dict.fromkeys([GIN_ROOT, *_search_paths])
  candidates = [given.absolute(), *(root / given for root in roots)]
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f"{label} {str(path)!r} does not exist (looked at "
                          f"{', '.join(str(c) for c in candidates)})")


def read_literals(path, selector: str, scope: str | None = None) -> dict:
  """The literal bindings `[scope/]selector.arg = value` of a gin file (a
  path as `find` resolves it, or a URI) and its includes, as {arg: value},
  read without touching gin's global state.

  `selector` matches a binding when either is a dotted suffix of the other
  ('soundlm.audiolm.ModelConfig' matches 'ModelConfig.x' and the reverse).
  As in gin, unscoped bindings apply in every scope and a binding in a scope
  that encloses `scope` ('a' for 'a/b') overrides less specific ones; later
  bindings override earlier ones. `import` statements are ignored. A binding
  that applies but holds a reference or macro raises ValueError.
  """
  parts = scope.split("/") if scope else []
  wanted = ["/".join(parts[:i]) for i in range(len(parts) + 1)]  # '', 'a', 'a/b'
  by_scope: dict[str, dict] = {s: {} for s in wanted}
  # A URI (a run's saved config.gin in a bucket) is read as it is named.
  _read_file(epath.Path(path) if paths.in_object_store(path) else find(path), selector,
             by_scope, ())
  values = {}
  for scope_name in wanted:
    values.update(by_scope[scope_name])
  return values


def _read_file(path: pathlib.Path | epath.Path, selector: str, by_scope: dict,
               including: tuple):
  if path in including:
    raise ValueError(f"{path}: includes itself (through {' -> '.join(map(str, including))})")
  with path.open() as f:
    for statement in config_parser.ConfigParser(f, _Placeholders()):
      if isinstance(statement, config_parser.IncludeStatement):
        _read_file(find(statement.filename, f"{path}: include"), selector, by_scope,
                   (*including, path))
      elif (isinstance(statement, config_parser.BindingStatement) and statement.arg_name
            and statement.scope in by_scope and _matches(statement.selector, selector)):
        if _holds_reference(statement.value):
          raise ValueError(f"{path}: {_binding_name(statement)} must be a literal, "
                           f"found {statement.value!r}")
        by_scope[statement.scope][statement.arg_name] = statement.value


def _matches(a: str, b: str) -> bool:
  short, long = sorted((a.split("."), b.split(".")), key=len)
  return long[len(long) - len(short):] == short


def _binding_name(statement) -> str:
  scope = f"{statement.scope}/" if statement.scope else ""
  return f"{scope}{statement.selector}.{statement.arg_name}"


def _holds_reference(value) -> bool:
  if isinstance(value, _Reference):
    return True
  if isinstance(value, dict):
    return any(_holds_reference(v) for item in value.items() for v in item)
  if isinstance(value, (list, tuple)):
    return any(_holds_reference(v) for v in value)
  return False


class _Reference(str):
  """A configurable reference or macro met while reading literals."""


class _Placeholders(config_parser.ParserDelegate):
  """Parser delegate that stands in for references and macros."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

  def macro(self, macro_name):
    return _Reference(f"%{macro_name}")


def parse(gin_files, gin_bindings=(), search_paths=()) -> None:
  """Parses gin files then bindings into gin's global configuration.

  Files resolve with `find`; any error gin raises becomes one ValueError
  ('invalid gin configuration: ...') naming the problem and where it is.
  """
  register_search_paths(search_paths)
  files = [str(find(path, "--gin_file")) for path in gin_files]
  _share_main_module()
  try:
    gin.parse_config_files_and_bindings(files, list(gin_bindings))
  except _GIN_ERRORS as error:
    raise ValueError(f"invalid gin configuration: {error}") from error


def _share_main_module() -> None:
  """`python -m soundlm.train` runs soundlm.train as `__main__`: a gin file's
  `import soundlm.train` must find that module rather than load a second copy,
  whose configurables would make every selector naming them ambiguous."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is not None and spec.name not in sys.modules:
    sys.modules[spec.name] = main


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The gin flags; `parse_args` adds the `--gin.NAME=VALUE` ones."""
  group = parser.add_argument_group(
      "gin", "Names such as gin/runs/lm_tiny.gin resolve in the current directory, "
      "then in the soundlm package and the search paths. --gin.NAME=VALUE is the "
      "binding 'NAME = VALUE' (e.g. --gin.Trainer.num_steps=10, "
      "--gin.eval/MarkovChainData.seed=3), applied after --gin_bindings.")
  group.add_argument("--gin_file", action="append", default=[],
                     help="gin config file (repeatable)")
  group.add_argument("--gin_bindings", action="append", default=[],
                     help="gin binding such as 'Trainer.num_steps = 10' (repeatable)")
  group.add_argument("--gin_search_paths", action="append", default=[],
                     help="folders searched for gin files and includes (repeatable, "
                          "comma-separated)")


def binding_from_flag(arg: str) -> str | None:
  """'NAME = VALUE' for the argument '--gin.NAME=VALUE', None for any other."""
  match = _GIN_FLAG.fullmatch(arg)
  return f"{match[1]} = {match[2]}" if match else None


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """`parser.parse_args`, with each `--gin.NAME=VALUE` added to gin_bindings;
  any other unknown argument is an error, as usual."""
  args, extras = parser.parse_known_args(argv)
  bindings = [binding_from_flag(arg) for arg in extras]
  unknown = [arg for arg, binding in zip(extras, bindings) if binding is None]
  if any(arg.startswith("--gin.") for arg in unknown):
    parser.error(f"expected --gin.NAME=VALUE, got {' '.join(unknown)}")
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  args.gin_bindings = [*args.gin_bindings, *bindings]
  return args


def parse_from_args(args: argparse.Namespace) -> None:
  """`parse` with the files, bindings and search paths of `parse_args`."""
  search_paths = [p.strip() for value in args.gin_search_paths for p in value.split(",")
                  if p.strip()]
  parse(args.gin_file, args.gin_bindings, search_paths)
