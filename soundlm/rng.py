"""Per-example random keys, so a generated example never depends on its batch.

Generation draws each example's randomness from its own key: the result for
one example is the same alone, in any batch position, at any batch size and
after a resume. `row_keys` turns what callers pass into one key per row: a
seed or a single key gives row i the key `fold_in(key, i)`; an array of keys
(one per example, e.g. from each decode item's seed) is used as it is.
"""
import jax
import jax.numpy as jnp
import numpy as np


def _is_key_array(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def row_keys(rng, batch: int) -> jax.Array:
  """One key per row: `rng` is an int seed, a single key, or keys of shape [batch]."""
  if isinstance(rng, (int, np.integer)):
    rng = jax.random.key(int(rng))
  if not _is_key_array(rng):
    raise TypeError(f"rng must be an int seed or a jax.random.key array, got {type(rng)}")
  if rng.ndim == 0:
    return jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(batch))
  if rng.shape != (batch,):
    raise ValueError(f"rng holds keys of shape {rng.shape}; expected one key or {batch}")
  return rng


def fold_rows(keys: jax.Array, data) -> jax.Array:
  """`fold_in(key, data)` for every row's key (data: an int or int array)."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys, data)


def split_rows(keys: jax.Array, num: int) -> jax.Array:
  """[B] keys -> [num, B]: `num` independent keys per row, leading axis first."""
  return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num))(keys), 0, 1)


def categorical_rows(keys: jax.Array, logits: jax.Array) -> jax.Array:
  """One draw per row of `logits` [B, ..., V] with that row's key."""
  return jax.vmap(lambda k, l: jax.random.categorical(k, l, axis=-1))(keys, logits)


def gumbel_rows(keys: jax.Array, shape) -> jax.Array:
  """Gumbel noise [B, *shape], each row from its own key."""
  return jax.vmap(lambda k: jax.random.gumbel(k, tuple(shape)))(keys)
