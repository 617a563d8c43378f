"""HuBERT (Hugging Face `HubertModel`) in Flax: the embedder of 50 Hz semantic tokens.

16 kHz waveform -> convolutional feature extractor (one frame per 320 samples
with the released kernels and strides) -> feature projection -> positional
convolution -> Transformer layers. Two layouts, as Hugging Face has them:
base (`stable_layer_norm=False`: group norm after the first convolution,
post-norm layers, the encoder norm before the first layer) and large
(`stable_layer_norm=True`: layer norm after every convolution, pre-norm
layers, the encoder norm after the last).

Hidden state 0 is the first layer's input and hidden state i layer i's output,
as the reference's `output_hidden_states` gives them; the large layout's final
norm is in `last_hidden_state` only.

`lengths` (samples of each clip of a zero-padded batch) keeps the padding out
of the group norm's statistics, the positional convolution and attention, so
a clip's frames are the ones it gets alone. The reference does the last two
with its attention mask, but its group norm takes the padding in (Hugging Face
advises against padding batches for the base layout), so for that layout a
padded batch reproduces the clip alone, not the reference's padded batch.
"""
import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp

from soundlm.layers import initializers
from soundlm.layers.attention import MultiHeadAttention
from soundlm.layers.feedforward import ACTIVATIONS, FeedForward
from soundlm.layers.norm import layer_norm
from soundlm.semantic import features as features_lib

FEATURE_NORMS = ("group", "layer")
_CONV_NORM_EPS = 1e-5  # PyTorch's GroupNorm / LayerNorm default, which the extractor uses


@dataclasses.dataclass(frozen=True)
class HubertConfig:
  """One HuBERT model (defaults: HuBERT base). Activations name
  `soundlm.layers.feedforward.ACTIVATIONS`; `normalize_waveform` scales each
  clip to zero mean and unit variance first, as the large models expect."""
  conv_dim: tuple[int, ...] = (512,) * 7
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_bias: bool = False
  feature_norm: str = "group"
  feature_activation: str = "gelu_exact"
  feature_projection_norm: bool = True
  width: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  activation: str = "gelu_exact"
  position_kernel: int = 128
  position_groups: int = 16
  stable_layer_norm: bool = False
  layer_norm_eps: float = 1e-5
  normalize_waveform: bool = False

  def __post_init__(self):
    if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) > 0:
      raise ValueError(f"conv_dim, conv_kernel and conv_stride: expected one entry per "
                       f"convolution each, got {len(self.conv_dim)}, {len(self.conv_kernel)} "
                       f"and {len(self.conv_stride)}")
    if self.feature_norm not in FEATURE_NORMS:
      raise ValueError(f"feature_norm: expected one of {FEATURE_NORMS}, got "
                       f"{self.feature_norm!r}")
    for name in ("feature_activation", "activation"):
      if getattr(self, name) not in ACTIVATIONS:
        raise ValueError(f"{name}: expected one of {sorted(ACTIVATIONS)}, got "
                         f"{getattr(self, name)!r}")
    for name in ("width", "num_heads", "mlp_dim", "position_kernel", "position_groups",
                 *(f"conv_{part}" for part in ("dim", "kernel", "stride"))):
      values = getattr(self, name)
      if min(values if isinstance(values, tuple) else (values,)) < 1:
        raise ValueError(f"{name} must be >= 1, got {values}")
    if self.num_layers < 0:
      raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
    for divisor in ("num_heads", "position_groups"):
      if self.width % getattr(self, divisor):
        raise ValueError(f"width {self.width} is not divisible by {divisor} "
                         f"{getattr(self, divisor)}")

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def samples_per_token(self) -> int:
    """The feature extractor's hop: samples per frame (320 for the released models)."""
    return math.prod(self.conv_stride)

  @property
  def receptive_field(self) -> int:
    """Samples one frame sees (400 for the released models)."""
    field, hop = 1, 1
    for kernel, stride in zip(self.conv_kernel, self.conv_stride):
      field, hop = field + (kernel - 1) * hop, hop * stride
    return field

  @property
  def token_padding(self) -> tuple[int, int]:
    """Zeros around a clip for tokenization: N samples then give N // hop
    frames, frame t centred on the span [hop t, hop t + hop) of token t."""
    extra = self.receptive_field - self.samples_per_token
    return extra // 2, extra - extra // 2

  def num_frames(self, num_samples):
    """Frames of `num_samples` (ints or arrays) at least one receptive field long."""
    for kernel, stride in zip(self.conv_kernel, self.conv_stride):
      num_samples = (num_samples - kernel) // stride + 1
    return num_samples


def _moments(x, valid):
  """(mean, biased variance) over axis 1 of the `valid` entries, kept dims."""
  count = valid.sum(axis=1, keepdims=True)
  mean = jnp.where(valid, x, 0).sum(axis=1, keepdims=True) / count
  centred = jnp.where(valid, x - mean, 0)
  return mean, (centred * centred).sum(axis=1, keepdims=True) / count


def normalize_waveform(wav, lengths=None):
  """Each clip at zero mean and unit variance over its first `lengths` samples
  (Hugging Face's `Wav2Vec2FeatureExtractor(do_normalize=True)`); zero past them."""
  valid = jnp.ones(wav.shape, bool) if lengths is None else features_lib.frame_mask(
      lengths, wav.shape[1])
  mean, var = _moments(wav, valid)
  return jnp.where(valid, wav - mean, 0) / jnp.sqrt(var + 1e-7)


class InstanceNorm(nn.Module):
  """Per-channel normalisation of [B, T, C] over each clip's valid frames
  (`valid` bool [B, T, 1]): PyTorch's GroupNorm with one group per channel,
  the padding left out."""

  @nn.compact
  def __call__(self, x, valid):
    scale = self.param("scale", initializers.ones(("conv_out",)), (x.shape[-1],))
    bias = self.param("bias", initializers.zeros(("conv_out",)), (x.shape[-1],))
    mean, var = _moments(x, valid)
    return (x - mean) / jnp.sqrt(var + _CONV_NORM_EPS) * scale + bias


class FeatureExtractor(nn.Module):
  """[B, N] waveform -> [B, T, conv_dim[-1]] frames; `lengths` [B] (samples)
  restricts the group norm's statistics to each clip's frames."""
  config: HubertConfig

  @nn.compact
  def __call__(self, wav, lengths=None):
    c = self.config
    activation = ACTIVATIONS[c.feature_activation]
    x = wav[..., None]
    num_valid = None if lengths is None else jnp.asarray(lengths)
    for i, (dim, kernel, stride) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
      x = nn.Conv(dim, (kernel,), strides=(stride,), padding="VALID", use_bias=c.conv_bias,
                  kernel_init=initializers.kernel((None, "conv_in", "conv_out")),
                  bias_init=initializers.zeros(("conv_out",)), name=f"conv_{i}")(x)
      if num_valid is not None:
        num_valid = (num_valid - kernel) // stride + 1
      if c.feature_norm == "layer":
        x = nn.LayerNorm(epsilon=_CONV_NORM_EPS, scale_init=initializers.ones(("conv_out",)),
                         bias_init=initializers.zeros(("conv_out",)), name=f"norm_{i}")(x)
      elif i == 0:
        valid = jnp.ones(x.shape[:2] + (1,), bool) if num_valid is None else (
            features_lib.frame_mask(num_valid, x.shape[1])[..., None])
        x = InstanceNorm(name="norm_0")(x, valid)
      x = activation(x)
    return x


class PositionalConv(nn.Module):
  """Grouped 'same' convolution over frames (weight norm folded into the
  kernel at import), activation; an even kernel drops the last output frame."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    half = c.position_kernel // 2
    y = nn.Conv(c.width, (c.position_kernel,), padding=[(half, half)],
                feature_group_count=c.position_groups,
                kernel_init=initializers.kernel((None, None, "embed")),
                bias_init=initializers.zeros(("embed",)), name="conv")(x)
    return ACTIVATIONS[c.feature_activation](y[:, :x.shape[1]])


class HubertLayer(nn.Module):
  """Self-attention and feed-forward, post-norm (base) or pre-norm (large)."""
  config: HubertConfig

  @nn.compact
  def __call__(self, x, padding_mask=None):
    c = self.config
    attention = MultiHeadAttention(c.num_heads, c.head_dim, use_bias=True, name="attention")
    mlp = FeedForward(c.mlp_dim, c.activation, use_bias=True, name="mlp")
    attention_norm = layer_norm("attention_norm", epsilon=c.layer_norm_eps)
    mlp_norm = layer_norm("mlp_norm", epsilon=c.layer_norm_eps)
    if c.stable_layer_norm:
      x = x + attention(attention_norm(x), padding_mask=padding_mask)
      return x + mlp(mlp_norm(x))
    x = attention_norm(x + attention(x, padding_mask=padding_mask))
    return mlp_norm(x + mlp(x))


class HubertEncoder(nn.Module):
  """[B, N] 16 kHz waveform (normalised already if the config says so) ->
  (hidden states [num_layers + 1 of B, T, width], last_hidden_state), T frames
  of `config.num_frames(N)`. `lengths` [B] (samples) marks the clips of a
  zero-padded batch; `num_layers` stops the stack early."""
  config: HubertConfig

  @nn.compact
  def __call__(self, wav, lengths=None, num_layers: int | None = None):
    c = self.config
    num_layers = c.num_layers if num_layers is None else num_layers
    if not 0 <= num_layers <= c.num_layers:
      raise ValueError(f"num_layers: expected 0..{c.num_layers}, got {num_layers}")
    x = FeatureExtractor(c, name="feature_extractor")(wav, lengths)
    if c.feature_projection_norm:
      x = layer_norm("projection_norm", epsilon=c.layer_norm_eps)(x)
    x = nn.Dense(c.width, kernel_init=initializers.kernel((None, "embed")),
                 bias_init=initializers.zeros(("embed",)), name="projection")(x)
    mask = None
    if lengths is not None:
      mask = features_lib.frame_mask(c.num_frames(jnp.asarray(lengths)), x.shape[1])
      x = jnp.where(mask[..., None], x, 0)
    x = x + PositionalConv(c, name="position")(x)
    encoder_norm = layer_norm("encoder_norm", epsilon=c.layer_norm_eps)
    if not c.stable_layer_norm:
      x = encoder_norm(x)
    hidden = [nn.with_logical_constraint(x, ("batch", "length", "embed"))]
    for index in range(num_layers):
      hidden.append(HubertLayer(c, name=f"layers_{index}")(hidden[-1], padding_mask=mask))
    return hidden, encoder_norm(hidden[-1]) if c.stable_layer_norm else hidden[-1]


def token_hidden_state(encoder: HubertEncoder, params, wav, lengths, layer: int):
  """[B, N] waveform -> hidden state `layer` at N // hop frames: each clip is
  normalised (if the config says so) and padded by `token_padding`, so that
  frame t is centred on token t's samples."""
  c = encoder.config
  if lengths is not None:
    wav = jnp.where(features_lib.frame_mask(lengths, wav.shape[1]), wav, 0)
  if c.normalize_waveform:
    wav = normalize_waveform(wav, lengths)
  left, right = c.token_padding
  wav = jnp.pad(wav, ((0, 0), (left, right)))
  lengths = None if lengths is None else jnp.asarray(lengths) + left + right
  hidden, _ = encoder.apply({"params": params}, wav, lengths, num_layers=layer)
  return hidden[layer]
