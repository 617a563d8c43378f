"""The Conformer layer of Hugging Face `Wav2Vec2BertModel` (w2v-BERT 2.0), exactly.

soundlm's shared `ConformerBlock` differs from it in ways that change the
numbers (no biases in attention and feed-forward layers, biased and centred
depthwise convolution, RoPE on queries and keys), so imported checkpoints run
through this variant. Parameter names follow the Hugging Face module names,
which keeps the checkpoint mapping in `hf_import` mechanical.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.layers import initializers
from soundlm.layers.position import apply_rotary


def _layer_norm(name, epsilon, kw):
  return nn.LayerNorm(epsilon=epsilon, scale_init=initializers.ones(("embed",)),
                      bias_init=initializers.zeros(("embed",)), name=name, **kw)


class FeedForward(nn.Module):
  """Dense(+bias) -> swish -> Dense(+bias)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.Dense(self.mlp_dim, kernel_init=initializers.kernel(("embed", "mlp")),
                 bias_init=initializers.zeros(("mlp",)), name="intermediate_dense", **kw)(x)
    h = nn.Dropout(self.dropout_rate)(nn.swish(h), deterministic=deterministic)
    h = nn.Dense(x.shape[-1], kernel_init=initializers.kernel(("mlp", "embed")),
                 bias_init=initializers.zeros(("embed",)), name="output_dense", **kw)(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class SelfAttention(nn.Module):
  """Multi-head self-attention with biased projections and one of the Hugging
  Face position schemes: 'relative_key' (Shaw et al.: a learned key-side
  embedding per clipped distance in [-left_max, right_max]), 'rotary' (rotates
  the layer input before the query/key projections) or 'none'."""
  num_heads: int
  head_dim: int
  position: str = "relative_key"
  left_max_position: int = 64
  right_max_position: int = 8
  rotary_base: float = 10_000.0
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _projection(self, name):
    return nn.DenseGeneral((self.num_heads, self.head_dim), dtype=self.dtype,
                           param_dtype=self.param_dtype,
                           kernel_init=initializers.kernel(("embed", "heads", "kv")),
                           bias_init=initializers.zeros(("heads", "kv")), name=name)

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    batch, length, width = x.shape
    query_key_input = x
    if self.position == "rotary":
      heads = x.reshape(batch, length, self.num_heads, self.head_dim)
      query_key_input = apply_rotary(heads, jnp.arange(length)[None],
                                     self.rotary_base).reshape(x.shape)
    query = self._projection("linear_q")(query_key_input)
    key = self._projection("linear_k")(query_key_input)
    value = self._projection("linear_v")(x)
    query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
    scale = self.head_dim ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) * scale
    if self.position == "relative_key":
      table = self.param(
          "distance_embedding",
          initializers.kernel((None, "kv"), nn.initializers.normal(0.02)),
          (self.left_max_position + self.right_max_position + 1, self.head_dim),
          self.param_dtype)
      positions = np.arange(length)
      distance = np.clip(positions[None, :] - positions[:, None], -self.left_max_position,
                         self.right_max_position) + self.left_max_position
      embedding = jnp.take(table, distance, axis=0).astype(query.dtype)  # [q, k, d]
      scores = scores + jnp.einsum("bqhd,qkd->bhqk", query, embedding) * scale
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype,
                           kernel_init=initializers.kernel(("heads", "kv", "embed")),
                           bias_init=initializers.zeros(("embed",)), name="linear_out")(out)


class ConvolutionModule(nn.Module):
  """LN, pointwise conv + GLU, causal depthwise conv, LN, swish, pointwise conv;
  no biases."""
  kernel_size: int
  epsilon: float = 1e-5
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width = x.shape[-1]
    h = _layer_norm("layer_norm", self.epsilon, kw)(x)
    h = nn.Dense(2 * width, use_bias=False, kernel_init=initializers.kernel(("embed", "mlp")),
                 name="pointwise_conv1", **kw)(h)
    h = nn.glu(h, axis=-1)
    h = nn.Conv(width, (self.kernel_size,), padding=[(self.kernel_size - 1, 0)],
                feature_group_count=width, use_bias=False,
                kernel_init=initializers.kernel((None, None, "embed")),
                name="depthwise_conv", **kw)(h)
    h = nn.swish(_layer_norm("depthwise_layer_norm", self.epsilon, kw)(h))
    h = nn.Dense(width, use_bias=False, kernel_init=initializers.kernel(("mlp", "embed")),
                 name="pointwise_conv2", **kw)(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class W2vBert2Block(nn.Module):
  """x + FF/2, + MHSA, + Conv, + FF/2, then LayerNorm (Hugging Face order)."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  conv_kernel_size: int = 31
  position: str = "relative_key"
  left_max_position: int = 64
  right_max_position: int = 8
  rotary_base: float = 10_000.0
  epsilon: float = 1e-5
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _half_step_feed_forward(self, name, x, deterministic):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = _layer_norm(f"{name}_layer_norm", self.epsilon, kw)(x)
    h = FeedForward(self.mlp_dim, self.dropout_rate, name=name, **kw)(
        h, deterministic=deterministic)
    return x + 0.5 * h

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = self._half_step_feed_forward("ffn1", x, deterministic)
    h = _layer_norm("self_attn_layer_norm", self.epsilon, kw)(x)
    h = SelfAttention(self.num_heads, self.head_dim, self.position, self.left_max_position,
                      self.right_max_position, self.rotary_base, self.dropout_rate,
                      name="self_attn", **kw)(h, deterministic=deterministic)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    x = x + ConvolutionModule(self.conv_kernel_size, self.epsilon, self.dropout_rate,
                              name="conv_module", **kw)(x, deterministic=deterministic)
    x = self._half_step_feed_forward("ffn2", x, deterministic)
    x = _layer_norm("final_layer_norm", self.epsilon, kw)(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))
