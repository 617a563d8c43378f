"""Position information: rotary embeddings, T5 bucketed relative bias and Shaw
relative keys."""
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from soundlm.layers import initializers


def apply_rotary(x, positions, max_wavelength: float = 10_000.0):
  """Rotates feature pairs of `x` [B, T, H, D] by angles set by `positions` [B|1, T].

  Uses the half-split convention (feature i pairs with i + D/2).
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
  half = head_dim // 2
  inv_freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, half]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def relative_position_bucket(relative_position, bidirectional: bool,
                             num_buckets: int, max_distance: int):
  """T5's bucketing of `key_pos - query_pos`: exact for small, log-spaced for large."""
  bucket = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  log_ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / math.log(
      max_distance / max_exact)
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """T5 relative position bias, computed once per stack and shared by its blocks."""
  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int, q_offset=0):
    """Returns the additive bias [1, H, q_len, k_len]; query i sits at q_offset + i."""
    table = self.param(
        "rel_embedding",
        initializers.kernel((None, "heads"), nn.initializers.normal(0.02)),
        (self.num_buckets, self.num_heads), self.param_dtype)
    query_pos = jnp.arange(q_len)[:, None] + q_offset
    key_pos = jnp.arange(k_len)[None, :]
    buckets = relative_position_bucket(key_pos - query_pos, self.bidirectional,
                                       self.num_buckets, self.max_distance)
    bias = jnp.take(table, buckets, axis=0)  # [q, k, H]
    return jnp.transpose(bias, (2, 0, 1))[None].astype(self.dtype)


class RelativeKeyScores(nn.Module):
  """Relative keys (Shaw et al., 2018) as Hugging Face w2v-BERT 2.0 uses them: a
  learned key-side embedding per distance `key_pos - query_pos`, clipped to
  [-left_max_distance, right_max_distance], dotted with the query."""
  left_max_distance: int = 64
  right_max_distance: int = 8
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query):
    """query [B, T, H, D] -> unscaled score term [B, H, T, T]."""
    left, right = self.left_max_distance, self.right_max_distance
    table = self.param(
        "embedding", initializers.kernel((None, "kv"), nn.initializers.normal(0.02)),
        (left + right + 1, query.shape[-1]), self.param_dtype)
    positions = np.arange(query.shape[1])
    distance = np.clip(positions[None, :] - positions[:, None], -left, right) + left
    # One dot product per query and table row, then each key picks its row:
    # [B, H, T, rows] instead of materialising a [T, T, D] embedding.
    per_row = jnp.einsum("bqhd,rd->bhqr", query, table.astype(query.dtype))
    return jnp.take_along_axis(per_row, distance[None, None], axis=-1)
