"""Gumbel-softmax vector quantizer producing w2v-BERT's training targets.

Front-end features are mapped to logits over a codebook of `codebook_size`
learned vectors; training picks one entry per frame with a straight-through
hard Gumbel-softmax, evaluation takes the argmax. The entry ids are the
masked-prediction targets, the vectors the contrastive targets.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from soundlm.layers import initializers


class GumbelQuantizer(nn.Module):
  codebook_size: int
  codebook_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features, *, temperature=1.0, deterministic: bool = True):
    """Returns (quantized [B, T, codebook_dim], ids int32 [B, T], probs [B, T, V])."""
    logits = nn.Dense(self.codebook_size, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=initializers.kernel((None, "vocab")),
                      bias_init=initializers.zeros(("vocab",)), name="logits")(features)
    logits = logits.astype(jnp.float32)
    codebook = self.param("codebook", initializers.kernel(
        ("vocab", "embed"), nn.initializers.uniform(1.0)),
        (self.codebook_size, self.codebook_dim), self.param_dtype)
    ids = jnp.argmax(logits, axis=-1)
    hard = jax.nn.one_hot(ids, self.codebook_size, dtype=jnp.float32)
    if not deterministic:
      gumbel = jax.random.gumbel(self.make_rng("gumbel"), logits.shape)
      soft = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
      ids = jnp.argmax(soft, axis=-1)
      hard = jax.nn.one_hot(ids, self.codebook_size, dtype=jnp.float32)
      hard = soft + jax.lax.stop_gradient(hard - soft)  # straight-through
    quantized = jnp.einsum("btv,vd->btd", hard.astype(self.dtype),
                           codebook.astype(self.dtype))
    return quantized, ids.astype(jnp.int32), jax.nn.softmax(logits, axis=-1)
