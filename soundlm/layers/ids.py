"""Range checks of token ids on the host, before they reach an embedding
lookup (which would read out of bounds as NaN rather than fail)."""
import numpy as np


def check_ids(name: str, ids, limit: int) -> None:
  """Raises ValueError unless every id of `ids` lies in [0, limit)."""
  ids = np.asarray(ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"{name} ids must be integers, got {ids.dtype}")
  if ids.size and (ids.min() < 0 or ids.max() >= limit):
    bad = ids[(ids < 0) | (ids >= limit)]
    raise ValueError(f"{name} ids must lie in [0, {limit}), found "
                     f"{np.unique(bad)[:8].tolist()} ({bad.size} of {ids.size})")
