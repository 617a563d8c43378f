"""Conformer block: macaron half-step feed-forwards around self-attention and a
depthwise-convolution module (Gulati et al., 2020)."""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers.attention import MultiHeadAttention
from soundlm.layers.feedforward import FeedForward
from soundlm.layers.norm import layer_norm


class ConvolutionModule(nn.Module):
  """LN, pointwise conv with GLU, depthwise conv, LN, swish, pointwise conv.

  LayerNorm stands in for the original BatchNorm so that no batch statistics
  have to be synchronised across the mesh or frozen for decoding.
  """
  kernel_size: int
  causal: bool = False
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, padding_mask=None, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = x.shape[-1]
    h = layer_norm("norm", **kw)(x)
    h = nn.Dense(2 * features, kernel_init=initializers.kernel(("embed", "mlp")),
                 bias_init=initializers.zeros(("mlp",)), name="pointwise_in", **kw)(h)
    h = nn.glu(h, axis=-1)
    if padding_mask is not None:
      h = h * padding_mask[..., None].astype(h.dtype)
    padding = [(self.kernel_size - 1, 0)] if self.causal else "SAME"
    h = nn.Conv(features, (self.kernel_size,), padding=padding,
                feature_group_count=features,
                kernel_init=initializers.kernel((None, None, "embed")),
                bias_init=initializers.zeros(("embed",)), name="depthwise", **kw)(h)
    h = nn.swish(layer_norm("depthwise_norm", **kw)(h))
    h = nn.Dense(features, kernel_init=initializers.kernel(("mlp", "embed")),
                 bias_init=initializers.zeros(("embed",)), name="pointwise_out", **kw)(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class ConformerBlock(nn.Module):
  """x + FF/2, + MHSA, + Conv, + FF/2, then LayerNorm."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  conv_kernel_size: int = 5
  position: str = "rope"
  causal_conv: bool = False
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention_implementation: str | None = None

  def _half_step_feed_forward(self, x, name, deterministic):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layer_norm(f"{name}_norm", **kw)(x)
    h = FeedForward(self.mlp_dim, "swish", dropout_rate=self.dropout_rate, name=name,
                    **kw)(h, deterministic=deterministic)
    return x + 0.5 * nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)

  @nn.compact
  def __call__(self, x, *, bias=None, padding_mask=None, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = self._half_step_feed_forward(x, "ff_start", deterministic)
    h = layer_norm("pre_attention_norm", **kw)(x)
    h = MultiHeadAttention(
        self.num_heads, self.head_dim, position=self.position,
        dropout_rate=self.dropout_rate, implementation=self.attention_implementation,
        name="attention", **kw)(h, bias=bias, padding_mask=padding_mask,
                                deterministic=deterministic)
    x = x + h
    x = x + ConvolutionModule(self.conv_kernel_size, self.causal_conv, self.dropout_rate,
                              name="convolution", **kw)(
                                  x, padding_mask=padding_mask, deterministic=deterministic)
    x = self._half_step_feed_forward(x, "ff_end", deterministic)
    x = layer_norm("final_norm", **kw)(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))
