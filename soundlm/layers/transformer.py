"""Pre-norm Transformer block."""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers.attention import MultiHeadAttention
from soundlm.layers.feedforward import FeedForward
from soundlm.layers.norm import layer_norm


class TransformerBlock(nn.Module):
  """x + Attention(LN(x)), then + FeedForward(LN(x)); dropout on both residuals."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  causal: bool = False
  position: str = "none"
  gated_mlp: bool = False
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention_implementation: str | None = None

  @nn.compact
  def __call__(self, x, *, bias=None, padding_mask=None, deterministic: bool = True,
               decode: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    h = layer_norm("pre_attention_norm", **kw)(x)
    h = MultiHeadAttention(
        self.num_heads, self.head_dim, causal=self.causal, position=self.position,
        dropout_rate=self.dropout_rate, implementation=self.attention_implementation,
        name="attention", **kw)(h, bias=bias, padding_mask=padding_mask,
                                deterministic=deterministic, decode=decode)
    x = x + h
    h = layer_norm("pre_mlp_norm", **kw)(x)
    h = FeedForward(self.mlp_dim, self.activation, self.gated_mlp, self.dropout_rate,
                    name="mlp", **kw)(h, deterministic=deterministic)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.with_logical_constraint(x + h, ("batch", "length", "embed"))
