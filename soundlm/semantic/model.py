"""w2v-BERT pre-training model: encoder, target quantizer and the two heads.

The quantizer discretises the unmasked front-end features; the contrastive
module's output at masked frames must pick its own quantized vector out of
distractors, and the MLM module's output must predict its quantizer id.
"""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.semantic.config import W2vBertConfig
from soundlm.semantic.encoder import W2vBertEncoder
from soundlm.semantic.quantizer import GumbelQuantizer


class W2vBertPretrainer(nn.Module):
  config: W2vBertConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features, mask, *, temperature=1.0, deterministic: bool = True):
    """features: encoder input; mask: bool [B, T] frames to mask. Returns a dict:
    'context' and 'targets' [B, T, contrastive_dim], 'mlm_logits' [B, T, V],
    'target_ids' [B, T], 'code_probs' [B, T, V]."""
    c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if c.num_contrastive_layers < 1 or c.num_mlm_layers < 1:
      raise ValueError("pre-training needs at least one contrastive and one MLM layer, got "
                       f"{c.num_contrastive_layers} and {c.num_mlm_layers}")
    hidden, unprojected = W2vBertEncoder(c, name="encoder", **kw)(
        features, mask=mask, deterministic=deterministic)
    quantized, ids, probs = GumbelQuantizer(c.codebook_size, c.codebook_dim,
                                            name="quantizer", **kw)(
        unprojected, temperature=temperature, deterministic=deterministic)

    def dense(features, names, name):
      return nn.Dense(features, kernel_init=initializers.kernel(names),
                      bias_init=initializers.zeros(names[-1:]), name=name, **kw)

    context = dense(c.contrastive_dim, ("embed", None), "context_projection")(
        hidden[c.num_contrastive_layers])
    targets = dense(c.contrastive_dim, ("embed", None), "target_projection")(quantized)
    mlm_logits = dense(c.codebook_size, ("embed", "vocab"), "mlm_head")(hidden[-1])
    return {"context": context, "targets": targets, "mlm_logits": mlm_logits,
            "target_ids": ids, "code_probs": probs}
