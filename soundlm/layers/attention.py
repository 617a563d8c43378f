"""Multi-head attention: bidirectional or causal, rotary, relative-key or biased
positions, KV cache.

The score computation goes through `jax.nn.dot_product_attention`, so a fused
kernel (cuDNN on GPU) is used where the backend has one.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers.position import RelativeKeyScores, apply_rotary

POSITIONS = ("none", "rope", "rope_on_input", "relative_key")
_NO_CACHE_POSITIONS = ("rope_on_input", "relative_key")


class MultiHeadAttention(nn.Module):
  """Self-attention over [B, T, E] inputs.

  With `decode=True` keys and values go into a 'cache' collection. Calling
  `init` with `decode=True` on a full-length input allocates the cache for that
  length; each later `apply(..., decode=True, mutable=['cache'])` consumes the
  next chunk of tokens and attends to everything cached so far.

  position: 'rope' rotates the projected queries and keys; 'rope_on_input'
  rotates the layer input, split into heads, before the query and key
  projections (Hugging Face w2v-BERT 2.0's 'rotary'); 'relative_key' adds
  `RelativeKeyScores` (w2v-BERT 2.0's default); 'none' adds nothing. An
  additive `bias` (e.g. T5 relative bias) combines with any of them.
  use_bias: biases on the four projections (w2v-BERT 2.0 has them).
  """
  num_heads: int
  head_dim: int
  causal: bool = False
  position: str = "none"
  rope_max_wavelength: float = 10_000.0
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  implementation: Optional[str] = None  # None (backend default), 'xla' or 'cudnn'.
  use_bias: bool = False
  left_max_distance: int = 64  # 'relative_key' clipping
  right_max_distance: int = 8

  def _bias(self, name, shape, names):
    """A zero-initialised projection bias in the compute dtype."""
    return self.param(name, initializers.zeros(names), shape,
                      self.param_dtype).astype(self.dtype)

  def _projection(self, x, name):
    """[B, T, E] -> [B, T, H, D] with a kernel [E, H, D] (and a bias [H, D])."""
    kernel = self.param(name, initializers.kernel(("embed", "heads", "kv")),
                        (x.shape[-1], self.num_heads, self.head_dim), self.param_dtype)
    out = jnp.einsum("bte,ehd->bthd", x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      out = out + self._bias(f"{name}_bias", (self.num_heads, self.head_dim),
                             ("heads", "kv"))
    return out

  def _rotate_input(self, x):
    """'rope_on_input': the input [B, T, H * D] rotated per head at positions 0..T-1."""
    batch, length, width = x.shape
    if width != self.num_heads * self.head_dim:
      raise ValueError(f"position 'rope_on_input' needs an input width of num_heads * "
                       f"head_dim = {self.num_heads * self.head_dim}, got {width}")
    heads = x.reshape(batch, length, self.num_heads, self.head_dim)
    return apply_rotary(heads, jnp.arange(length)[None],
                        self.rope_max_wavelength).reshape(x.shape)

  @nn.compact
  def __call__(self, x, *, bias=None, padding_mask=None, deterministic: bool = True,
               decode: bool = False):
    if self.position not in POSITIONS:
      raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
    if decode and self.position in _NO_CACHE_POSITIONS:
      raise ValueError(f"position {self.position!r} has no KV-cache decoding; "
                       "use 'rope' or 'none'")
    batch, length, _ = x.shape
    query_key_input = self._rotate_input(x) if self.position == "rope_on_input" else x
    query = self._projection(query_key_input, "query")
    key = self._projection(query_key_input, "key")
    value = self._projection(x, "value")

    offset = 0
    mask = None
    is_causal = self.causal
    if decode:
      key, value, offset, mask = self._update_cache(key, value, length)
      is_causal = False if mask is not None else self.causal
    if self.position == "rope":
      query_pos = (jnp.arange(length) + offset)[None]
      query = apply_rotary(query, query_pos, self.rope_max_wavelength)
      if mask is None:  # keys are this chunk only
        key = apply_rotary(key, query_pos, self.rope_max_wavelength)
    if self.position == "relative_key":
      relative = RelativeKeyScores(self.left_max_distance, self.right_max_distance,
                                   self.param_dtype, name="relative_key")(query)
      relative = relative * jnp.asarray(self.head_dim ** -0.5, relative.dtype)
      bias = relative if bias is None else bias + relative
    if padding_mask is not None:
      pad = padding_mask[:, None, None, :].astype(bool)
      mask = pad if mask is None else jnp.logical_and(mask, pad)
    if bias is not None:
      bias = bias.astype(self.dtype)

    query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
    out = jax.nn.dot_product_attention(
        query, key.astype(query.dtype), value.astype(query.dtype), bias=bias,
        mask=mask, is_causal=is_causal, implementation=self.implementation)
    out_kernel = self.param("out", initializers.kernel(("heads", "kv", "embed")),
                            (self.num_heads, self.head_dim, x.shape[-1]), self.param_dtype)
    out = jnp.einsum("bthd,hde->bte", out, out_kernel.astype(self.dtype))
    if self.use_bias:
      out = out + self._bias("out_bias", (x.shape[-1],), ("embed",))
    return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)

  def _update_cache(self, key, value, length):
    """Writes this chunk's keys/values at the cache index; returns what to attend to.

    Returns (keys, values, offset of this chunk, boolean mask [1, 1, Tq, Tmax])
    or, while the cache is being created by `init`, the chunk itself.
    """
    is_initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape,
                                 value.dtype)
    index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:
      return key, value, 0, None
    max_length = cached_key.value.shape[1]
    offset = index.value
    if self.position == "rope":
      key = apply_rotary(key, (jnp.arange(length) + offset)[None],
                         self.rope_max_wavelength)
    cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, key.astype(cached_key.value.dtype), (0, offset, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, value.astype(cached_value.value.dtype), (0, offset, 0, 0))
    index.value = offset + length
    query_pos = jnp.arange(length)[:, None] + offset
    key_pos = jnp.arange(max_length)[None, :]
    visible = key_pos <= query_pos if self.causal else key_pos < offset + length
    return cached_key.value, cached_value.value, offset, visible[None, None]
