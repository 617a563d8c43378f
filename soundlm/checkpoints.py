"""Orbax checkpoints of the train state together with the data-iterator position.

Layout of `<workdir>/checkpoints/<step>/`: an item `state` (a plain nested
dict of arrays: step, params, opt_state, collections) written with orbax's
standard handler, and an item `data` (JSON), `{"processes": [state_0, ...]}`,
with every process's input position: each process feeds its own share of
the batch, so each one's position is gathered at save time (orbax writes
JSON from the primary process only) and each takes its own on restore. A
restart with another process count is refused, naming both counts. Reads
always pass restore targets with shardings (`restore`, `restore_part`), so
the train state written on one mesh or device count loads on any other.
"""
import json
import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from soundlm.io import paths


def gather_process_states(state: dict) -> list[dict]:
  """Every process's JSON-able `state`, in process order (a collective: all
  processes call it together)."""
  if jax.process_count() == 1:
    return [state]
  encoded = np.frombuffer(json.dumps(state, sort_keys=True).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.int32(encoded.size))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths)]


def process_state(saved: dict, directory: str) -> dict:
  """This process's entry of a saved `{"processes": [...]}` data item."""
  states = saved.get("processes") if isinstance(saved, dict) else None
  if not isinstance(states, list):
    raise ValueError(f"{directory}: the data item has no per-process input positions "
                     f"(expected {{'processes': [...]}}, got keys {sorted(saved)})")
  if len(states) != jax.process_count():
    raise ValueError(
        f"{directory} was written by {len(states)} processes but this run has "
        f"{jax.process_count()}: each process resumes its own input position, so "
        f"restart with {len(states)} processes (each may have any number of devices), or "
        f"train on in a new work dir; models.load and checkpoints.restore_part read this "
        f"checkpoint's parameters with any process count (docs/multihost.md)")
  return states[jax.process_index()]


class Checkpointer:
  """Asynchronous saves every `save_every` steps, keeping the newest `keep`."""

  def __init__(self, directory: str, save_every: int, keep: int = 3,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    self.directory = epath.Path(directory)
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
    """Saves if `step` is due (or `force`); returns whether a save started.

    `data_state` is this process's input position; it is gathered from all
    processes only when a save is due, so every process calls `save` with the
    same step and `force`.
    """
    if not (force or self._manager.should_save(step)):
      return False
    data = {"processes": gather_process_states(data_state)}
    saved = self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave(data)),
        force=force)
    if saved:
      logging.info("checkpoint of step %d started in %s", step, self.directory)
    return saved

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[dict, dict] | None:
    """Restores `step` (default: latest) onto the shardings of `abstract_state`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with the target shardings,
    so a checkpoint written on one mesh restores onto any other.
    Returns (state, this process's data state), or None when there is no
    checkpoint; a checkpoint of another process count raises ValueError.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], process_state(restored["data"], f"{self.directory}/{step}")

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
  path = epath.Path(paths.absolute(directory)) / str(step) / "state"
  restore_args = ocp.checkpoint_utils.construct_restore_args(target, shardings)
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
  except (KeyError, ValueError) as error:
    raise ValueError(f"{path} does not hold the expected model variables "
                     f"({error}); was it written for another model?") from error
  return restored, step
