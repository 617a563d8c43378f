"""AudioLM's decoder-only Transformer, shared by all three stages.

Pre-norm causal Transformer blocks with one T5 relative position bias
computed per stack (causal buckets), an untied output projection and
float32 logits. With `decode=True` the blocks keep a KV cache in the flax
'cache' collection and the bias is evaluated at the cache position, so one
token at a time reproduces the full forward pass.
"""
import dataclasses
from typing import ClassVar, Optional

import flax.linen as nn
import gin
import jax.numpy as jnp

from soundlm.audiolm.layouts import Layout
from soundlm.layers import initializers
from soundlm.layers import stack
from soundlm.layers.norm import layer_norm
from soundlm.layers.position import RelativePositionBias
from soundlm.layers.transformer import TransformerBlock


@gin.configurable(module="soundlm.audiolm")
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of one stage's Transformer. Defaults are the paper's (about 0.3B)."""
  num_layers: int = 12
  num_heads: int = 16
  head_dim: int = 64
  embed_dim: int = 1024
  mlp_dim: int = 4096
  dropout_rate: float = 0.1
  num_buckets: int = 32
  max_distance: int = 128
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_implementation: Optional[str] = None
  # The block stack: looped (block_0 ...; the default layout) or scanned over
  # layers, and the remat policy of its blocks (`soundlm.layers.stack`).
  scan_layers: bool = False
  remat_policy: str = "none"

  def __post_init__(self):
    for name in ("num_layers", "num_heads", "head_dim", "embed_dim", "mlp_dim",
                 "num_buckets", "max_distance"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
    stack.check(self.remat_policy, "ModelConfig.remat_policy")


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """One trained AudioLM stage: its Transformer and its token layout."""
  FAMILY: ClassVar[str] = "audiolm"
  model: ModelConfig
  layout: Layout


class DecoderLM(nn.Module):
  """tokens [B, T] -> logits [B, T, vocab_size] (float32), causal."""
  config: ModelConfig
  vocab_size: int

  @nn.compact
  def __call__(self, tokens, *, deterministic: bool = True, decode: bool = False):
    cfg = self.config
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    length = tokens.shape[1]
    x = nn.Embed(self.vocab_size, cfg.embed_dim, name="embed",
                 embedding_init=initializers.kernel(("vocab", "embed"),
                                                    nn.initializers.normal(1.0)),
                 **kw)(tokens)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)

    key_length, offset = length, 0
    if decode:
      key_length, offset = self._advance_position(length)
    bias = RelativePositionBias(cfg.num_heads, bidirectional=False,
                                num_buckets=cfg.num_buckets,
                                max_distance=cfg.max_distance, name="relative_bias",
                                **kw)(length, key_length, offset)
    block = dict(num_heads=cfg.num_heads, head_dim=cfg.head_dim, mlp_dim=cfg.mlp_dim,
                 causal=True, dropout_rate=cfg.dropout_rate,
                 attention_implementation=cfg.attention_implementation, **kw)
    x = stack.apply(TransformerBlock, block, cfg.num_layers, x, scan=cfg.scan_layers,
                    remat=cfg.remat_policy, arrays={"bias": bias},
                    static={"deterministic": deterministic, "decode": decode})
    x = layer_norm("final_norm", **kw)(x)
    logits = nn.Dense(self.vocab_size, use_bias=False, name="logits",
                      kernel_init=initializers.kernel(("embed", "vocab")), **kw)(x)
    return nn.with_logical_constraint(logits.astype(jnp.float32),
                                      ("batch", "length", "vocab"))

  def _advance_position(self, length):
    """(cache length, position of this chunk); the cache is sized by `init`.

    'key_positions' holds the positions of the cache slots; its length is the
    cache length that the blocks allocated at init.
    """
    initialized = self.has_variable("cache", "key_positions")
    key_positions = self.variable("cache", "key_positions",
                                  lambda: jnp.arange(length, dtype=jnp.int32))
    index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return length, 0
    offset = index.value
    index.value = offset + length
    return key_positions.value.shape[0], offset
