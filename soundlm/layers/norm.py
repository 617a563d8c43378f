"""Normalisation layers with logically named parameters."""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers


def layer_norm(name: str | None = None, dtype=jnp.float32, param_dtype=jnp.float32,
               epsilon: float = 1e-6):
  """LayerNorm whose scale and bias are annotated with the 'embed' axis."""
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=initializers.ones(("embed",)),
      bias_init=initializers.zeros(("embed",)))
