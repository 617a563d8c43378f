"""Conformer block: macaron half-step feed-forwards around self-attention and a
depthwise-convolution module (Gulati et al., 2020).

The defaults are soundlm's own block (SoundStorm, the w2v-BERT 'conformer'
block). With `use_bias=True, conv_bias=False, causal_conv=True,
layer_norm_epsilon=1e-5` and position 'relative_key' or 'rope_on_input' it
computes Hugging Face's `Wav2Vec2BertEncoderLayer` (w2v-BERT 2.0) exactly, so
imported checkpoints run on the same block (`soundlm.semantic.hf_import` maps
the tensor names).
"""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers.attention import MultiHeadAttention
from soundlm.layers.feedforward import FeedForward
from soundlm.layers.norm import layer_norm


class ConvolutionModule(nn.Module):
  """LN, pointwise conv with GLU, depthwise conv, LN, swish, pointwise conv.

  LayerNorm stands in for the original BatchNorm so that no batch statistics
  have to be synchronised across the mesh or frozen for decoding. `causal`
  pads the depthwise convolution on the left only (w2v-BERT 2.0) instead of
  centring it.
  """
  kernel_size: int
  causal: bool = False
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  use_bias: bool = True
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x, *, padding_mask=None, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = x.shape[-1]
    h = layer_norm("norm", epsilon=self.epsilon, **kw)(x)
    h = nn.Dense(2 * features, use_bias=self.use_bias,
                 kernel_init=initializers.kernel(("embed", "mlp")),
                 bias_init=initializers.zeros(("mlp",)), name="pointwise_in", **kw)(h)
    h = nn.glu(h, axis=-1)
    if padding_mask is not None:
      h = h * padding_mask[..., None].astype(h.dtype)
    padding = [(self.kernel_size - 1, 0)] if self.causal else "SAME"
    h = nn.Conv(features, (self.kernel_size,), padding=padding,
                feature_group_count=features, use_bias=self.use_bias,
                kernel_init=initializers.kernel((None, None, "embed")),
                bias_init=initializers.zeros(("embed",)), name="depthwise", **kw)(h)
    h = nn.swish(layer_norm("depthwise_norm", epsilon=self.epsilon, **kw)(h))
    h = nn.Dense(features, use_bias=self.use_bias,
                 kernel_init=initializers.kernel(("mlp", "embed")),
                 bias_init=initializers.zeros(("embed",)), name="pointwise_out", **kw)(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class ConformerBlock(nn.Module):
  """x + FF/2, + MHSA, + Conv, + FF/2, then LayerNorm.

  use_bias: biases in the attention and feed-forward projections; conv_bias:
  biases in the convolution module. `position`, `rope_max_wavelength` and the
  relative-key clipping distances go to `MultiHeadAttention`.
  """
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
  use_bias: bool = False
  conv_bias: bool = True
  layer_norm_epsilon: float = 1e-6
  rope_max_wavelength: float = 10_000.0
  left_max_distance: int = 64
  right_max_distance: int = 8

  def _norm(self, name):
    return layer_norm(name, self.dtype, self.param_dtype, self.layer_norm_epsilon)

  def _half_step_feed_forward(self, x, name, deterministic):
    h = self._norm(f"{name}_norm")(x)
    h = FeedForward(self.mlp_dim, "swish", dropout_rate=self.dropout_rate,
                    use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                    name=name)(h, deterministic=deterministic)
    return x + 0.5 * nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)

  @nn.compact
  def __call__(self, x, *, bias=None, padding_mask=None, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = self._half_step_feed_forward(x, "ff_start", deterministic)
    h = self._norm("pre_attention_norm")(x)
    h = MultiHeadAttention(
        self.num_heads, self.head_dim, position=self.position,
        rope_max_wavelength=self.rope_max_wavelength, dropout_rate=self.dropout_rate,
        implementation=self.attention_implementation, use_bias=self.use_bias,
        left_max_distance=self.left_max_distance,
        right_max_distance=self.right_max_distance, name="attention", **kw)(
            h, bias=bias, padding_mask=padding_mask, deterministic=deterministic)
    x = x + h
    x = x + ConvolutionModule(self.conv_kernel_size, self.causal_conv, self.dropout_rate,
                              use_bias=self.conv_bias, epsilon=self.layer_norm_epsilon,
                              name="convolution", **kw)(
                                  x, padding_mask=padding_mask, deterministic=deterministic)
    x = self._half_step_feed_forward(x, "ff_end", deterministic)
    x = self._norm("final_norm")(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))
