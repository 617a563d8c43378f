"""The cosine schedule shared by training-time masking and MaskGIT decoding."""
import math
from typing import Sequence

import jax
import jax.numpy as jnp


def sample_mask_ratio(rng, shape):
  """Draws p = cos(u), u ~ U[0, pi/2): the paper's masking ratio for training."""
  u = jax.random.uniform(rng, shape, minval=0.0, maxval=math.pi / 2)
  return jnp.cos(u)


def remaining_masked(num_masked, iteration, num_iterations, previous):
  """Tokens still masked after `iteration` (0-based) of `num_iterations`.

  Follows floor(num_masked * cos(pi/2 * (iteration + 1) / num_iterations)),
  unmasks at least one token per iteration while any are left, and nothing
  stays masked after the last iteration. Arguments may be traced integers.
  """
  progress = (iteration + 1).astype(jnp.float32) / num_iterations.astype(jnp.float32)
  target = jnp.floor(num_masked * jnp.cos(progress * (math.pi / 2))).astype(jnp.int32)
  target = jnp.minimum(target, previous - 1)
  target = jnp.where(iteration + 1 >= num_iterations, 0, target)
  return jnp.maximum(target, 0)


def check_schedule(schedule: Sequence[int], num_levels: int) -> tuple[int, ...]:
  """Validates a per-level iteration schedule: one positive count per RVQ level."""
  try:
    counts = tuple(int(n) for n in schedule)
  except TypeError as e:
    raise ValueError(f"schedule must be a sequence of ints, got {schedule!r}") from e
  if any(c != n for c, n in zip(counts, schedule)):
    raise ValueError(f"schedule must hold integers, got {schedule!r}")
  if len(counts) != num_levels:
    raise ValueError(
        f"schedule needs one iteration count per RVQ level ({num_levels}), "
        f"got {len(counts)}: {counts}")
  if min(counts) < 1:
    raise ValueError(f"schedule counts must all be >= 1, got {counts}")
  return counts


def paper_schedule(num_levels: int, first_level_iterations: int = 16) -> tuple[int, ...]:
  """(16, 1, ..., 1): the paper's default, 27 forward passes for 12 levels."""
  return (first_level_iterations,) + (1,) * (num_levels - 1)
