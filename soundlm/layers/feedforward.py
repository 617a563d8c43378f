"""Position-wise feed-forward networks, plain or gated (GLU family)."""
import functools

import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers

# 'gelu' is the tanh approximation; 'gelu_exact' the erf form (PyTorch's default,
# which imported Hugging Face models such as HuBERT use).
ACTIVATIONS = {"gelu": nn.gelu, "gelu_exact": functools.partial(nn.gelu, approximate=False),
               "relu": nn.relu, "swish": nn.swish}


class FeedForward(nn.Module):
  """Dense(embed->mlp), activation (times a gate if `gated`), Dense(mlp->embed);
  `use_bias` adds a bias to each Dense (w2v-BERT 2.0 has them)."""
  hidden_dim: int
  activation: str = "gelu"
  gated: bool = False
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  use_bias: bool = False

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    dense = lambda features, axes, name: nn.Dense(  # noqa: E731
        features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=initializers.kernel(axes), bias_init=initializers.zeros(axes[1:]),
        name=name)
    hidden = ACTIVATIONS[self.activation](dense(self.hidden_dim, ("embed", "mlp"), "wi")(x))
    if self.gated:
      hidden = hidden * dense(self.hidden_dim, ("embed", "mlp"), "wi_gate")(x)
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return dense(x.shape[-1], ("mlp", "embed"), "wo")(hidden)
