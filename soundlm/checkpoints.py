"""Orbax checkpoints of the train state together with the data-iterator position.

Layout of `<workdir>/checkpoints/<step>/`: an item `state` (a plain nested
dict of arrays: step, params, opt_state, collections) written with orbax's
standard handler, and an item `data` (JSON) with the input pipeline's
position. Reads always pass restore targets with shardings (`restore`,
`restore_part`), so a checkpoint written on one mesh or device count loads
on any other.
"""
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Asynchronous saves every `save_every` steps, keeping the newest `keep`."""

  def __init__(self, directory: str, save_every: int, keep: int = 3,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every,
        enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: dict, data_state: dict, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started."""
    saved = self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave(data_state)),
        force=force)
    if saved:
      logging.info("checkpoint of step %d started in %s", step, self.directory)
    return saved

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[dict, dict] | None:
    """Restores `step` (default: latest) onto the shardings of `abstract_state`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with the target shardings,
    so a checkpoint written on one mesh restores onto any other.
    Returns (state, data_state), or None when there is no checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying `shardings`: the restore target for `tree`."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def checkpoint_steps(directory: str) -> list[int]:
  """The steps saved (completely) under a checkpoint directory, oldest first."""
  path = epath.Path(directory)
  if not path.exists():
    return []
  manager = ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore_part(directory: str, target, shardings, step: int | None = None):
  """(part of the saved train state, step): only the leaves in `target` (a
  nested dict of shape structs mirroring the state's layout) are read, onto
  `shardings`, so any device count or mesh can read any checkpoint and the
  optimizer state is never loaded."""
  steps = checkpoint_steps(directory)
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {directory}")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint of step {step} in {directory} (have {steps})")
  path = epath.Path(directory) / str(step) / "state"
  restore_args = ocp.checkpoint_utils.construct_restore_args(target, shardings)
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
  except (KeyError, ValueError) as error:
    raise ValueError(f"{path} does not hold the expected model variables "
                     f"({error}); was it written for another model?") from error
  return restored, step
