"""Gin entry point: `python -m soundlm.train --gin_file=... --workdir=...`.

What is trained, on which data and mesh, is all chosen in gin:
`train.task`, `train.data` and optionally `train.eval_data`, plus the
`Trainer.*`, `make_mesh.*` and `logical_axis_rules.*` settings.

Exit status: 0 when `num_steps` are done, 1 on a non-finite step, 2 for bad
flags or gin, and 75 (`trainer.PREEMPTED_EXIT_CODE`) when a SIGTERM stopped
the run after saving its step: run the same command again to resume.
"""
import argparse
import logging
import sys

import gin

from soundlm import gin_utils
from soundlm import partitioning
from soundlm import trainer as trainer_lib


@gin.configurable(denylist=["workdir"])
def train(workdir: str, task=gin.REQUIRED, data=gin.REQUIRED, eval_data=None):
  """Builds the mesh and trainer from gin and trains; returns the trainer."""
  mesh = partitioning.make_mesh()
  trainer = trainer_lib.Trainer(task, data, workdir, eval_data=eval_data, mesh=mesh,
                                rules=partitioning.logical_axis_rules(),
                                run_config=gin.config_str())
  trainer.run()
  return trainer


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  gin_utils.add_flags(parser)
  parser.add_argument("--workdir", required=True,
                      help="checkpoints, metrics, config (a local path or gs:// URI)")
  partitioning.add_distributed_flags(parser)
  args = gin_utils.parse_args(parser, argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter
  try:
    gin_utils.parse_from_args(args)
  except (FileNotFoundError, ValueError) as error:
    parser.exit(2, f"error: {error}\n")
  partitioning.initialize_from_flags(args, parser)
  try:
    trainer = train(args.workdir)
  except trainer_lib.NonFiniteLossError as error:
    logging.error("%s", error)
    return 1
  return trainer_lib.PREEMPTED_EXIT_CODE if trainer.preempted else 0


if __name__ == "__main__":
  sys.exit(main())
