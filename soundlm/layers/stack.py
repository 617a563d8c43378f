"""A stack of identical blocks, looped or scanned over layers, with optional remat.

    x = stack.apply(ConformerBlock, block_kwargs, num_layers, x, scan=c.scan_layers,
                    remat=c.remat_policy, arrays={'padding_mask': mask},
                    static={'deterministic': True})

Looped (the default) keeps one parameter subtree per layer, `block_0` ...
`block_{L-1}`, in the calling module: the layout of every checkpoint written
before scanning existed. Scanned (`scan=True`) runs the block under
`nn.scan`: one subtree `layers/block` whose arrays carry a leading layer axis
(logical name 'layers', replicated by every partitioning rule set), so XLA
compiles one block instead of L and compile time stops growing with depth.
`remat` names a `jax.checkpoint` policy: the block's activations are
recomputed in the backward pass instead of kept, except what the policy
saves. `to_scanned` / `to_looped` convert parameters between the two layouts.
"""
import contextlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

# What a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "none": None,  # no remat: every activation is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # only the block's input
    "dots": jax.checkpoint_policies.checkpoint_dots,  # matrix products' outputs
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
LAYER_AXIS = "layers"
SCANNED = "layers"  # the scanned stack's subtree (its block is 'block' inside it)
_unroll = False


@contextlib.contextmanager
def unrolled():
  """Scanned stacks traced in this context unroll their loop: the same
  computation, but XLA's cost analysis, which counts a loop body once, then
  counts every layer (`soundlm.compile` counts FLOPs this way)."""
  global _unroll
  previous, _unroll = _unroll, True
  try:
    yield
  finally:
    _unroll = previous


def check(remat: str, where: str) -> None:
  """Refuses an unknown remat policy, naming the setting."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"{where}: remat policy must be one of {sorted(REMAT_POLICIES)}, "
                     f"got {remat!r}")


class _Layer(nn.Module):
  """One layer of a scanned stack: carries the activations, broadcasts the rest."""
  block: Any
  block_kwargs: tuple  # (name, value) pairs
  array_names: tuple   # the broadcast inputs, passed positionally by nn.scan
  static: tuple        # (name, value) pairs of Python settings

  @nn.compact
  def __call__(self, x, *arrays):
    block = self.block(**dict(self.block_kwargs), name="block")
    return block(x, **dict(zip(self.array_names, arrays)), **dict(self.static)), None


def apply(block, block_kwargs: Mapping[str, Any], num_layers: int, x, *, scan: bool = False,
          remat: str = "none", arrays: Mapping[str, Any] | None = None,
          static: Mapping[str, Any] | None = None):
  """`num_layers` blocks `block(**block_kwargs)` applied to `x` in turn, inside
  the calling module's compact method. `arrays`: keyword inputs shared by every
  layer (may be traced, or None); `static`: Python keyword settings."""
  check(remat, "stack")
  arrays, static = dict(arrays or {}), dict(static or {})
  policy = REMAT_POLICIES[remat]
  if not scan:
    layer = block if remat == "none" else nn.remat(block, policy=policy)
    for i in range(num_layers):
      x = layer(**block_kwargs, name=f"block_{i}")(x, **arrays, **static)
    return x
  layer = _Layer if remat == "none" else nn.remat(_Layer, policy=policy, prevent_cse=False)
  scanned = nn.scan(layer, variable_axes={True: 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * len(arrays), length=num_layers,
                    unroll=num_layers if _unroll else 1,
                    metadata_params={nn.PARTITION_NAME: LAYER_AXIS})
  x, _ = scanned(block=block, block_kwargs=tuple(block_kwargs.items()),
                 array_names=tuple(arrays), static=tuple(static.items()),
                 name=SCANNED)(x, *arrays.values())
  return x


def to_scanned(tree: Mapping, num_layers: int) -> dict:
  """A looped stack's (unboxed) variables, `block_0` ... in `tree`, in the
  scanned layout; the other entries of `tree` are kept."""
  missing = [f"block_{i}" for i in range(num_layers) if f"block_{i}" not in tree]
  if missing or SCANNED in tree:
    raise ValueError(f"not a looped stack of {num_layers} layers: missing {missing}"
                     if missing else f"already scanned (has {SCANNED!r})")
  layers = [tree[f"block_{i}"] for i in range(num_layers)]
  rest = {k: v for k, v in tree.items() if k not in {f"block_{i}" for i in range(num_layers)}}
  return {**rest, SCANNED: {"block": jax.tree_util.tree_map(
      lambda *xs: jnp.stack(xs), *layers)}}


def to_looped(tree: Mapping, num_layers: int) -> dict:
  """A scanned stack's variables in the looped layout (`block_0` ...)."""
  if SCANNED not in tree:
    raise ValueError(f"not a scanned stack: no {SCANNED!r} in {sorted(tree)}")
  stacked = tree[SCANNED]["block"]
  depth = {x.shape[0] for x in jax.tree_util.tree_leaves(stacked)}
  if depth != {num_layers}:
    raise ValueError(f"the scanned stack holds {sorted(depth)} layers, expected {num_layers}")
  rest = {k: v for k, v in tree.items() if k != SCANNED}
  return {**rest, **{f"block_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
                     for i in range(num_layers)}}
