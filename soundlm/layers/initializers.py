"""Parameter initialisers annotated with logical axis names.

Every parameter in soundlm carries logical names so that the partitioning
rules in `gin/partitioning/` decide how it is laid out over the mesh.
"""
from typing import Sequence

import flax.linen as nn

DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()


def logical(init, names: Sequence[str | None]):
  """Wraps `init` so the created parameter is boxed with logical axis names."""
  return nn.with_logical_partitioning(init, tuple(names))


def kernel(names: Sequence[str | None], init=DEFAULT_KERNEL_INIT):
  return logical(init, names)


def zeros(names: Sequence[str | None]):
  return logical(nn.initializers.zeros_init(), names)


def ones(names: Sequence[str | None]):
  return logical(nn.initializers.ones_init(), names)
