"""Gin entry point: `python -m soundlm.train --gin_file=... --workdir=...`.

What is trained, on which data and mesh, is all chosen in gin:
`train.task`, `train.data` and optionally `train.eval_data`, plus the
`Trainer.*`, `make_mesh.*` and `logical_axis_rules.*` settings.
"""
import argparse
import logging
import os
import sys

import gin

from soundlm import partitioning
from soundlm import registry
from soundlm import trainer as trainer_lib


@gin.configurable(denylist=["workdir"])
def train(workdir: str, task=gin.REQUIRED, data=gin.REQUIRED, eval_data=None):
  """Builds the mesh and trainer from gin and trains; returns the trainer."""
  mesh = partitioning.make_mesh()
  trainer = trainer_lib.Trainer(task, data, workdir, eval_data=eval_data, mesh=mesh,
                                rules=partitioning.logical_axis_rules())
  trainer.run()
  return trainer


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_gin_file(path: str) -> str:
  """A gin file as given, else relative to the repository root."""
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise FileNotFoundError(f"--gin_file {path!r} does not exist (looked in the current "
                          f"directory and in {REPO_ROOT})")


def parse_gin(gin_files, gin_bindings):
  """Parses gin files and bindings, turning gin's errors into one clear message.

  Parsing runs from the repository root so that includes such as
  `include 'gin/partitioning/fsdp.gin'` resolve wherever the command starts.
  """
  registry.import_all()
  gin_files = [resolve_gin_file(path) for path in gin_files]
  cwd = os.getcwd()
  try:
    os.chdir(REPO_ROOT)
    gin.parse_config_files_and_bindings(gin_files, gin_bindings)
  except (ValueError, KeyError, NameError, TypeError, SyntaxError, IOError) as error:
    raise ValueError(f"invalid gin configuration: {error}") from error
  finally:
    os.chdir(cwd)


def add_gin_flags(parser: argparse.ArgumentParser):
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin config file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="gin binding such as 'Trainer.num_steps = 10' (repeatable)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  add_gin_flags(parser)
  parser.add_argument("--workdir", required=True, help="checkpoints, metrics, config")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter
  try:
    parse_gin(args.gin_file, args.gin_bindings)
  except (FileNotFoundError, ValueError) as error:
    parser.exit(2, f"error: {error}\n")
  partitioning.initialize_distributed()
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "config.gin"), "w") as f:
    f.write(gin.config_str())
  try:
    train(args.workdir)
  except trainer_lib.NonFiniteLossError as error:
    logging.error("%s", error)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
