"""The SoundStorm network: a bidirectional Conformer over summed token embeddings.

Frame t's input is the sum of one embedding per RVQ level (each level has its
own table whose last row is that level's mask token) and the embedding of the
semantic token aligned to t. One dense output head per level; callers that
need a single level (decoding, training on level q) ask for just that head.
"""
import dataclasses
from typing import ClassVar

import flax.linen as nn
import gin
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers import stack
from soundlm.layers.conformer import ConformerBlock


def align_semantic(semantic, num_frames: int, frames_per_token: int):
  """Duplicates each semantic token to `frames_per_token` codec frames.

  Refuses lengths that do not line up instead of trimming or padding them.
  """
  if semantic.ndim != 2:
    raise ValueError(f"semantic must be [batch, time], got shape {semantic.shape}")
  expected = semantic.shape[1] * frames_per_token
  if expected != num_frames:
    raise ValueError(
        f"semantic length {semantic.shape[1]} x {frames_per_token} frames per "
        f"token = {expected} does not match num_frames = {num_frames}")
  return jnp.repeat(semantic, frames_per_token, axis=1)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoundStormConfig:
  """Hyperparameters of one SoundStorm model; defaults are the paper's (about 350M)."""
  FAMILY: ClassVar[str] = "soundstorm"
  semantic_vocab: int = 1024
  codebook_size: int = 1024
  num_levels: int = 12
  num_layers: int = 12
  embed_dim: int = 1024
  num_heads: int = 16
  head_dim: int = 64
  mlp_dim: int = 4096
  conv_kernel_size: int = 5
  dropout_rate: float = 0.0
  frames_per_semantic_token: int = 2
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_implementation: str | None = None  # None (backend default), 'xla', 'cudnn'
  # The Conformer stack: looped (block_0 ...; the default layout) or scanned over
  # layers, and the remat policy of its blocks (`soundlm.layers.stack`).
  scan_layers: bool = False
  remat_policy: str = "none"

  def __post_init__(self):
    for name in ("semantic_vocab", "codebook_size", "num_levels", "num_layers", "embed_dim",
                 "num_heads", "head_dim", "mlp_dim", "conv_kernel_size",
                 "frames_per_semantic_token"):
      if getattr(self, name) < 1:
        raise ValueError(f"SoundStormConfig.{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"SoundStormConfig.dropout_rate must be in [0, 1), "
                       f"got {self.dropout_rate}")
    stack.check(self.remat_policy, "SoundStormConfig.remat_policy")

  def token_needs(self) -> dict:
    """What the model reads of a token space (`TokenSpace.check_compatible` keywords)."""
    return dict(num_levels=self.num_levels, codebook_size=self.codebook_size,
                semantic_vocab=self.semantic_vocab,
                frames_per_semantic=self.frames_per_semantic_token)


class SoundStormModel(nn.Module):
  """Maps (semantic [B, T/r], codes [B, T, Q] with mask ids) to per-level logits."""
  config: SoundStormConfig = SoundStormConfig()

  @property
  def semantic_vocab(self) -> int:
    return self.config.semantic_vocab

  @property
  def codebook_size(self) -> int:
    return self.config.codebook_size

  @property
  def num_levels(self) -> int:
    return self.config.num_levels

  @property
  def frames_per_semantic_token(self) -> int:
    return self.config.frames_per_semantic_token

  @property
  def mask_id(self) -> int:
    """The id that marks a masked code at every level (one past the codebook)."""
    return self.config.codebook_size

  @nn.compact
  def __call__(self, semantic, codes, *, level=None, padding_mask=None,
               deterministic=True):
    """Returns float32 logits.

    level: None -> [B, T, Q, K] (every head); a scalar (may be traced) ->
    [B, T, K] for that level; an int array [B] -> [B, T, K], one level per
    example.
    """
    c = self.config
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    batch, num_frames, num_levels = codes.shape
    if num_levels != c.num_levels:
      raise ValueError(f"codes must have {c.num_levels} levels, got shape {codes.shape}")
    aligned = align_semantic(semantic, num_frames, c.frames_per_semantic_token)
    if aligned.shape[0] != batch:
      raise ValueError(f"semantic batch {semantic.shape[0]} != codes batch {batch}")

    init = nn.initializers.normal(stddev=1.0)
    code_table = self.param(
        "code_embedding", initializers.kernel(("levels", None, "embed"), init),
        (c.num_levels, c.codebook_size + 1, c.embed_dim), param_dtype)
    semantic_table = self.param(
        "semantic_embedding", initializers.kernel(("vocab", "embed"), init),
        (c.semantic_vocab, c.embed_dim), param_dtype)
    # Level q's ids index rows q * (K + 1) ... of the flattened table.
    offsets = jnp.arange(c.num_levels) * (c.codebook_size + 1)
    flat_table = code_table.reshape(-1, c.embed_dim).astype(dtype)
    x = jnp.take(flat_table, codes + offsets, axis=0).sum(axis=2)
    x = x + jnp.take(semantic_table.astype(dtype), aligned, axis=0)
    x = x * jnp.asarray((c.num_levels + 1) ** -0.5, dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    block = dict(num_heads=c.num_heads, head_dim=c.head_dim, mlp_dim=c.mlp_dim,
                 conv_kernel_size=c.conv_kernel_size, position="rope",
                 dropout_rate=c.dropout_rate, dtype=dtype, param_dtype=param_dtype,
                 attention_implementation=c.attention_implementation)
    x = stack.apply(ConformerBlock, block, c.num_layers, x, scan=c.scan_layers,
                    remat=c.remat_policy, arrays={"padding_mask": padding_mask},
                    static={"deterministic": deterministic})
    # Each Conformer block ends in a LayerNorm, so the heads read normalised features.
    return self._heads(x, level, dtype, param_dtype)

  def _heads(self, x, level, dtype, param_dtype):
    c = self.config
    kernel = self.param(
        "head_kernel",
        initializers.kernel(("levels", "embed", "vocab"),
                            nn.initializers.lecun_normal(batch_axis=(0,))),
        (c.num_levels, c.embed_dim, c.codebook_size), param_dtype)
    bias = self.param("head_bias", initializers.zeros(("levels", "vocab")),
                      (c.num_levels, c.codebook_size), param_dtype)
    if level is None:
      logits = jnp.einsum("btd,qdk->btqk", x, kernel.astype(dtype)) + bias.astype(dtype)
    else:
      level = jnp.asarray(level, jnp.int32)
      if level.ndim == 0:
        logits = x @ kernel[level].astype(dtype) + bias[level].astype(dtype)
      elif level.shape == (x.shape[0],):
        logits = (jnp.einsum("btd,bdk->btk", x, kernel[level].astype(dtype))
                  + bias[level][:, None, :].astype(dtype))
      else:
        raise ValueError(f"level must be None, a scalar or shape [{x.shape[0]}], "
                         f"got shape {level.shape}")
    return logits.astype(jnp.float32)
