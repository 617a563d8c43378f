"""SoundStream generator: causal convolutional encoder, residual VQ, mirrored decoder.

Encoder: conv(C, 7) -> blocks [3 residual units (dilations 1, 3, 9), strided
conv doubling the channels] -> conv(D, 3). The decoder mirrors it with
transposed convolutions. Every convolution is causal, so encoder frame t only
sees samples up to the end of frame t, decoded sample j only codes up to the
frame containing j, and both can run chunk by chunk (`stream=True`, see
`soundlm.layers.conv`).
"""
import dataclasses
import math
from typing import ClassVar, Optional, Sequence

import flax.linen as nn
import gin
import jax.numpy as jnp

from soundlm.layers.conv import CausalConv1D, CausalConvTranspose1D
from soundlm.layers.initializers import DEFAULT_KERNEL_INIT
from soundlm.layers.rvq import ResidualVectorQuantizer

_ACTIVATIONS = ("batch", "length", None)


class ResidualUnit(nn.Module):
  """x + ELU(conv1(ELU(conv7_dilated(x)))).

  With `zero_init` the 1x1 convolution starts at zero, so the unit starts as
  the identity (see SoundStreamConfig.zero_init_residuals).
  """
  channels: int
  dilation: int
  kernel_size: int = 7
  zero_init: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.elu(CausalConv1D(self.channels, self.kernel_size, dilation=self.dilation, **kw)(
        x, stream=stream))
    last_init = nn.initializers.zeros_init() if self.zero_init else DEFAULT_KERNEL_INIT
    y = nn.elu(CausalConv1D(self.channels, 1, kernel_init=last_init, **kw)(y, stream=stream))
    return x + y


class Encoder(nn.Module):
  """[B, N, 1] -> [B, N / prod(strides), D]."""
  channels: int
  embedding_dim: int
  strides: Sequence[int]
  dilations: Sequence[int] = (1, 3, 9)
  kernel_size: int = 7
  zero_init_residuals: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = CausalConv1D(self.channels, self.kernel_size, axes=(None, "conv_out"), **kw)(
        x, stream=stream)
    x = nn.elu(x)
    channels = self.channels
    for stride in self.strides:
      for dilation in self.dilations:
        x = ResidualUnit(channels, dilation, self.kernel_size, self.zero_init_residuals,
                         **kw)(x, stream=stream)
      channels *= 2
      x = nn.elu(CausalConv1D(channels, 2 * stride, stride=stride, **kw)(x, stream=stream))
      x = nn.with_logical_constraint(x, _ACTIVATIONS)
    return CausalConv1D(self.embedding_dim, 3, **kw)(x, stream=stream)


class Decoder(nn.Module):
  """[B, T, D] -> [B, T * prod(strides), 1]; strides listed in encoder order."""
  channels: int
  strides: Sequence[int]
  dilations: Sequence[int] = (1, 3, 9)
  kernel_size: int = 7
  zero_init_residuals: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    channels = self.channels * 2 ** len(self.strides)
    x = nn.elu(CausalConv1D(channels, self.kernel_size, **kw)(x, stream=stream))
    for stride in reversed(self.strides):
      channels //= 2
      x = nn.elu(CausalConvTranspose1D(channels, 2 * stride, stride, **kw)(x, stream=stream))
      for dilation in self.dilations:
        x = ResidualUnit(channels, dilation, self.kernel_size, self.zero_init_residuals,
                         **kw)(x, stream=stream)
      x = nn.with_logical_constraint(x, _ACTIVATIONS)
    return CausalConv1D(1, self.kernel_size, axes=("conv_in", None), **kw)(x, stream=stream)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
  """Hyperparameters of one SoundStream.

  Defaults are the paper's 16 kHz codec (C=32, strides 2, 4, 5, 8: 50 Hz frames,
  Q=12 levels of 1024 codes). `embedding_dim` D is not given in the paper.
  """
  FAMILY: ClassVar[str] = "soundstream"
  sample_rate: int = 16_000
  channels: int = 32
  embedding_dim: int = 256
  strides: tuple[int, ...] = (2, 4, 5, 8)
  dilations: tuple[int, ...] = (1, 3, 9)
  kernel_size: int = 7
  num_levels: int = 12
  codebook_size: int = 1024
  ema_decay: float = 0.99
  kmeans_iterations: int = 10
  dead_code_threshold: float = 0.03
  # A code unused for dead_code_patience x codebook_size frames is replaced
  # (0: only the EMA threshold above); see soundlm.layers.rvq.
  dead_code_patience: float = 4.0
  quantizer_dropout_rate: float = 1.0
  commitment_weight: float = 1.0
  # Each residual unit starts as the identity (its last convolution at zero):
  # a deep stack then trains like a shallow one at first (docs/codec.md,
  # "Why the tiny codec learns slowly").
  zero_init_residuals: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    # Gin binds lists as lists: keep the config hashable (it keys jit caches).
    object.__setattr__(self, "strides", tuple(self.strides))
    object.__setattr__(self, "dilations", tuple(self.dilations))
    for name in ("sample_rate", "channels", "embedding_dim", "kernel_size", "num_levels",
                 "codebook_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"SoundStreamConfig.{name} must be >= 1, got {getattr(self, name)}")
    for name in ("dead_code_threshold", "dead_code_patience"):
      if getattr(self, name) < 0:
        raise ValueError(f"SoundStreamConfig.{name} must be >= 0, got {getattr(self, name)}")
    if not self.strides or min(self.strides) < 1:
      raise ValueError(f"SoundStreamConfig.strides must be positive, got {self.strides}")

  @property
  def hop_length(self) -> int:
    return math.prod(self.strides)

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  @property
  def stream_warmup_frames(self) -> int:
    """Frames a stream's first chunk needs: any (zero padding)."""
    return 1


class CodecModule:
  """What `soundlm.codec.api.Codec` reads of a codec module (SoundStream,
  EnCodec, Mimi), all from the module's `config` but `streams` (whether it
  runs chunk by chunk)."""
  streams = True

  @property
  def sample_rate(self) -> int:
    return self.config.sample_rate

  @property
  def num_levels(self) -> int:
    return self.config.num_levels

  @property
  def codebook_size(self) -> int:
    return self.config.codebook_size

  @property
  def hop_length(self) -> int:
    return self.config.hop_length

  @property
  def frame_rate(self) -> float:
    return self.config.frame_rate

  @property
  def stream_warmup_frames(self) -> int:
    return self.config.stream_warmup_frames


class SoundStream(CodecModule, nn.Module):
  """Waveform [B, N] <-> codes [B, N / hop_length, Q]; N a whole number of frames."""
  config: SoundStreamConfig = SoundStreamConfig()

  def setup(self):
    c = self.config
    kw = dict(dilations=c.dilations, kernel_size=c.kernel_size,
              zero_init_residuals=c.zero_init_residuals, dtype=jnp.dtype(c.dtype),
              param_dtype=jnp.dtype(c.param_dtype))
    self.encoder = Encoder(c.channels, c.embedding_dim, c.strides, **kw)
    self.decoder = Decoder(c.channels, c.strides, **kw)
    self.quantizer = ResidualVectorQuantizer(
        num_levels=c.num_levels, codebook_size=c.codebook_size, dim=c.embedding_dim,
        decay=c.ema_decay, kmeans_iterations=c.kmeans_iterations,
        dead_code_threshold=c.dead_code_threshold, dead_code_patience=c.dead_code_patience,
        dropout_rate=c.quantizer_dropout_rate,
        commitment_weight=c.commitment_weight)

  def embed(self, wav, *, stream: bool = False):
    """[B, N] -> encoder output [B, N / hop_length, D] (float32)."""
    if wav.ndim != 2:
      raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
    if wav.shape[1] % self.hop_length:
      raise ValueError(
          f"wav length {wav.shape[1]} must be a multiple of hop_length {self.hop_length}")
    return self.encoder(wav[..., None], stream=stream).astype(jnp.float32)

  def encode(self, wav, *, num_levels: Optional[int] = None, stream: bool = False):
    """[B, N] -> int32 codes [B, N / hop_length, num_levels or Q]."""
    return self.quantizer.encode(self.embed(wav, stream=stream), num_levels)

  def decode(self, codes, *, stream: bool = False):
    """int32 codes [B, T, Q' <= Q] -> [B, T * hop_length] float32."""
    return self.synthesize(self.quantizer.decode(codes), stream=stream)

  def synthesize(self, embeddings, *, stream: bool = False):
    """Quantized embeddings [B, T, D] -> waveform [B, T * hop_length] float32."""
    return self.decoder(embeddings, stream=stream)[..., 0].astype(jnp.float32)

  def autoencode(self, wav):
    """[B, N] -> (waveform [B, N], embeddings [B, T, D]) without the RVQ: the
    encoder and decoder alone (quantizer warm-up, and the ceiling the codes
    can reach)."""
    embeddings = self.embed(wav)
    return self.synthesize(embeddings), embeddings

  def quantize(self, embeddings, *, train: bool = False, num_levels: Optional[int] = None):
    """Encoder output [B, T, D] -> QuantizerOutput (see ResidualVectorQuantizer)."""
    return self.quantizer(embeddings, train=train, num_levels=num_levels)

  def __call__(self, wav, *, train: bool = False, num_levels: Optional[int] = None):
    """Reconstructs [B, N]: returns (waveform [B, N], QuantizerOutput)."""
    quantized = self.quantize(self.embed(wav), train=train, num_levels=num_levels)
    return self.synthesize(quantized.quantized), quantized
