"""The w2v-BERT encoder: front end, then a stack of Conformer blocks.

Hidden state 0 is the front end's projected output (the first block's input);
hidden state i is block i's output. The first `num_contrastive_layers` blocks
form the contrastive module, the rest the masked-prediction (MLM) module.
Both block types are the shared `ConformerBlock`; 'w2v_bert_2' sets the options
that make it Hugging Face's `Wav2Vec2BertEncoderLayer`.
"""
import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers.conformer import ConformerBlock
from soundlm.semantic import features as features_lib
from soundlm.semantic.config import W2vBertConfig
from soundlm.semantic.frontend import ConvSubsampling, StackedProjection

# W2vBertConfig.position -> MultiHeadAttention position. w2v-BERT 2.0's 'rotary'
# rotates the layer input before the query/key projections.
ATTENTION_POSITIONS = {"rope": "rope", "none": "none", "relative_key": "relative_key",
                       "rotary": "rope_on_input"}


def input_features(wav: jnp.ndarray, config: W2vBertConfig, lengths=None) -> jnp.ndarray:
  """[B, N] 16 kHz waveform -> the encoder's input features for N // 640 tokens:
  [B, 4 T25, mels] ('conv') or [B, 2 T25, 2 mels] ('stacked'). `lengths` [B]:
  the samples of each clip of a padded batch (features past them are zero)."""
  mels = features_lib.token_aligned_log_mel(wav, config.num_mel_bins, lengths)
  if config.frontend == "conv":
    return mels
  return features_lib.stack_frames(mels)


def padding_mask(lengths, num_samples: int, config: W2vBertConfig) -> jnp.ndarray:
  """bool [B, T] at the Conformer stack's rate for a batch of `num_samples`:
  True on the frames of each clip's whole 25 Hz tokens (`lengths` [B] samples)."""
  per_token = config.model_frame_rate // 25
  return features_lib.frame_mask(per_token * features_lib.num_tokens(jnp.asarray(lengths)),
                                 per_token * features_lib.num_tokens(num_samples))


class W2vBertEncoder(nn.Module):
  """Input features -> (hidden states [L + 1 of B, T, width], unprojected front-end
  features). `mask` (bool [B, T], True = masked) replaces the masked frames of
  hidden state 0 by a learned embedding; `padding_mask` (bool [B, T], True on
  real frames) keeps padding out of the front end, attention and convolutions,
  as the reference model's attention mask does, so real frames do not depend on
  it; `num_layers` stops the stack early."""
  config: W2vBertConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _block(self, index):
    c = self.config
    w2v_bert_2 = {}
    if c.block == "w2v_bert_2":
      w2v_bert_2 = dict(use_bias=True, conv_bias=False, causal_conv=True,
                        layer_norm_epsilon=c.layer_norm_eps, rope_max_wavelength=c.rotary_base,
                        left_max_distance=c.left_max_position,
                        right_max_distance=c.right_max_position)
    return ConformerBlock(c.num_heads, c.head_dim, c.mlp_dim, c.conv_kernel_size,
                          position=ATTENTION_POSITIONS[c.position],
                          dropout_rate=c.dropout_rate, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"layers_{index}", **w2v_bert_2)

  @nn.compact
  def __call__(self, features, *, mask=None, padding_mask=None, deterministic: bool = True,
               num_layers: int | None = None):
    c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    num_layers = c.num_layers if num_layers is None else num_layers
    if not 0 <= num_layers <= c.num_layers:
      raise ValueError(f"num_layers: expected 0..{c.num_layers}, got {num_layers}")
    if c.frontend == "conv":
      x, unprojected = ConvSubsampling(c.conv_channels, c.width, name="frontend", **kw)(
          features, padding_mask)
    else:
      x, unprojected = StackedProjection(c.width, c.layer_norm_eps, name="frontend",
                                         **kw)(features)
    mask_embedding = self.param("mask_embedding", initializers.logical(
        nn.initializers.uniform(1.0), ("embed",)), (c.width,), self.param_dtype)
    if mask is not None:
      x = jnp.where(mask[..., None], mask_embedding.astype(x.dtype), x)
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    hidden = [x]
    for index in range(num_layers):
      x = self._block(index)(x, padding_mask=padding_mask, deterministic=deterministic)
      hidden.append(x)
    return hidden, unprojected
