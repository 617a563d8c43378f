"""The base of the hand-rolled numpy data iterators: seeded, split over hosts,
resumable.

Batch i of host h is a pure function of (seed, h, i), so the whole position is
the batch counter. `get_state()` returns it as JSON together with the seed and
the host split it belongs to; `set_state()` refuses a state of another seed or
split (it would silently repeat or skip data) and otherwise resumes at that
batch, so a restored run sees exactly the batches it had not yet seen.
"""
from typing import Any, Mapping

import jax
import numpy as np


def host_split(batch_size: int, host_index: int | None = None,
               num_hosts: int | None = None) -> tuple[int, int, int]:
  """(host, number of hosts, this host's rows of each global batch); the host
  and count default to this process's place among JAX processes."""
  host = jax.process_index() if host_index is None else host_index
  hosts = jax.process_count() if num_hosts is None else num_hosts
  if not 0 <= host < hosts:
    raise ValueError(f"host_index: expected 0..{hosts - 1}, got {host}")
  if batch_size < 1:
    raise ValueError(f"batch_size: must be positive, got {batch_size}")
  if batch_size % hosts:
    raise ValueError(f"batch_size: {batch_size} is not divisible by {hosts} hosts")
  return host, hosts, batch_size // hosts


def check_identity(state: Mapping[str, Any], identity: Mapping[str, Any], owner: str):
  """Raises ValueError naming every setting where a saved `state` differs from
  the `identity` of the iterator restoring it."""
  mismatched = {k: (state.get(k), v) for k, v in identity.items() if state.get(k) != v}
  if mismatched:
    raise ValueError(f"state: saved by a different input pipeline than this {owner}; "
                     f"(saved, this) = {mismatched}")


class SeededIterator:
  """This host's share of global batches, each drawn from its own generator.

  Subclasses implement `make_batch(rng)`, which draws one batch of
  `local_batch_size` rows from `rng` and nothing else.
  """

  def __init__(self, batch_size: int, seed: int = 0, *, host_index: int | None = None,
               num_hosts: int | None = None):
    self.host, self.num_hosts, self.local_batch_size = host_split(batch_size, host_index,
                                                                  num_hosts)
    self.batch_size, self.seed = batch_size, seed
    self.position = 0

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    raise NotImplementedError(f"{type(self).__name__} must implement make_batch(rng)")

  def batch_for(self, position: int) -> dict[str, np.ndarray]:
    """Batch `position` of this host, without moving the iterator."""
    return self.make_batch(np.random.default_rng([self.seed, self.host, position]))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_for(self.position)
    self.position += 1
    return batch

  def _identity(self) -> dict:
    return {"seed": self.seed, "host": self.host, "num_hosts": self.num_hosts}

  def get_state(self) -> dict:
    return dict(self._identity(), position=self.position)

  def set_state(self, state: Mapping[str, Any]) -> None:
    check_identity(state, self._identity(), type(self).__name__)
    position = state.get("position")
    if not isinstance(position, int) or position < 0:
      raise ValueError(f"state: position must be a batch count >= 0, got {position!r}")
    self.position = position
