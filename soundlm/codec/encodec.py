"""EnCodec (Défossez et al. 2022, arXiv 2210.13438) for inference, as Hugging
Face's `EncodecModel` computes it, to run public checkpoints such as
facebook/encodec_24khz (`soundlm.codec.hf_encodec` loads them).

Encoder: conv(C, 7) -> per stride s (reversed upsampling_ratios): residual
blocks, ELU, conv(2s, stride s) doubling the channels -> LSTM (with a skip)
-> ELU -> conv(D). The decoder mirrors it with transposed convolutions. The
port covers the causal models (every convolution padded on the past only,
with reflected or zero samples at the start), so encoding and decoding also
run chunk by chunk (`stream=True`, `soundlm.layers.conv`): the LSTMs carry
their state in the 'cache' collection. Codes come from the shared residual
quantizer, whose codebooks hold EnCodec's (its EMA statistics are only read).

Submodules are named after Hugging Face's module lists (`encoder/layers_3/
block_1` is `encoder.layers.3.block.1`), so the loader maps names one to one.
"""
import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from soundlm.codec.model import CodecModule
from soundlm.layers.conv import CausalConv1D, CausalConvTranspose1D
from soundlm.layers.rvq import ResidualVectorQuantizer

PAD_MODES = {"reflect": "reflect", "constant": "zeros"}  # Hugging Face name -> CausalConv1D


@dataclasses.dataclass(frozen=True)
class EncodecConfig:
  """Hyperparameters of one EnCodec (Hugging Face `EncodecConfig` names; the
  defaults are encodec_24khz's). `num_levels` is how many of the checkpoint's
  quantizer levels the model uses (its first ones); `num_lstm_layers=0` drops
  the LSTMs (Mimi's SEANet, `soundlm.codec.mimi`)."""
  sample_rate: int = 24_000
  num_filters: int = 32
  hidden_size: int = 128
  upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
  kernel_size: int = 7
  last_kernel_size: int = 7
  residual_kernel_size: int = 3
  dilation_growth_rate: int = 2
  num_residual_layers: int = 1
  compress: int = 2
  num_lstm_layers: int = 2
  use_conv_shortcut: bool = True
  pad_mode: str = "reflect"
  num_levels: int = 32
  codebook_size: int = 1024

  def __post_init__(self):
    object.__setattr__(self, "upsampling_ratios", tuple(self.upsampling_ratios))
    if self.pad_mode not in PAD_MODES:
      raise ValueError(f"EncodecConfig.pad_mode {self.pad_mode!r} is not supported "
                       f"(supported: {sorted(PAD_MODES)})")
    for name in ("sample_rate", "num_filters", "hidden_size", "kernel_size",
                 "last_kernel_size", "residual_kernel_size", "dilation_growth_rate",
                 "num_residual_layers", "compress", "num_levels", "codebook_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"EncodecConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.num_lstm_layers < 0:
      raise ValueError(f"EncodecConfig.num_lstm_layers must be >= 0, got {self.num_lstm_layers}")
    if not self.upsampling_ratios or min(self.upsampling_ratios) < 1:
      raise ValueError(f"EncodecConfig.upsampling_ratios must be positive, got "
                       f"{self.upsampling_ratios}")

  @property
  def hop_length(self) -> int:
    return math.prod(self.upsampling_ratios)

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(self.dilation_growth_rate ** j for j in range(self.num_residual_layers))

  @property
  def stream_warmup_frames(self) -> int:
    """Frames a stream's first chunk needs so that every reflecting convolution
    sees more samples than it pads (1 with zero padding)."""
    if self.pad_mode != "reflect":
      return 1
    residual = [(self.residual_kernel_size - 1) * d for d in self.dilations]
    needs = [(self.kernel_size - 1, self.hop_length)]  # (padding, samples per frame)
    rate = self.hop_length
    for ratio in reversed(self.upsampling_ratios):
      needs += [(pad, rate) for pad in residual] + [(ratio, rate)]
      rate //= ratio
    needs += [(self.last_kernel_size - 1, 1), (self.kernel_size - 1, 1)]
    for ratio in self.upsampling_ratios:
      rate *= ratio
      needs += [(pad, rate) for pad in residual]
    needs.append((self.last_kernel_size - 1, self.hop_length))
    return max(pad // per_frame + 1 for pad, per_frame in needs)


class ResnetBlock(nn.Module):
  """shortcut(x) + conv1(ELU(conv_k(ELU(x)))), the inner width divided by `compress`."""
  config: EncodecConfig
  channels: int
  dilation: int

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    c = self.config
    padding = PAD_MODES[c.pad_mode]
    y = CausalConv1D(self.channels // c.compress, c.residual_kernel_size,
                     dilation=self.dilation, padding=padding, name="block_1")(
                         nn.elu(x), stream=stream)
    y = CausalConv1D(self.channels, 1, padding=padding, name="block_3")(nn.elu(y), stream=stream)
    if c.use_conv_shortcut:
      x = CausalConv1D(self.channels, 1, padding=padding, name="shortcut")(x, stream=stream)
    return x + y


class LSTM(nn.Module):
  """`num_layers` stacked PyTorch-layout LSTMs over [B, T, C], plus the input
  (EnCodec's skip). Streaming carries each layer's (h, c) in 'cache'."""
  num_layers: int

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    batch, _, width = x.shape
    y = x
    for layer in range(self.num_layers):
      w_ih = self.param(f"weight_ih_l{layer}", nn.initializers.lecun_normal(),
                        (4 * width, width))
      w_hh = self.param(f"weight_hh_l{layer}", nn.initializers.lecun_normal(),
                        (4 * width, width))
      b_ih = self.param(f"bias_ih_l{layer}", nn.initializers.zeros, (4 * width,))
      b_hh = self.param(f"bias_hh_l{layer}", nn.initializers.zeros, (4 * width,))
      carry = (jnp.zeros((batch, width), x.dtype), jnp.zeros((batch, width), x.dtype))
      if stream:
        state = self.variable("cache", f"state_l{layer}", jnp.zeros, (2, batch, width),
                              x.dtype)
        carry = (state.value[0], state.value[1])
      inputs = y @ w_ih.T + b_ih + b_hh

      def step(carry, gates_in, w_hh=w_hh):
        h, c = carry
        i, f, g, o = jnp.split(gates_in + h @ w_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

      carry, y = jax.lax.scan(step, carry, inputs.transpose(1, 0, 2))
      y = y.transpose(1, 0, 2)
      if stream:
        state.value = jnp.stack(carry)
    return y + x


class Encoder(nn.Module):
  """[B, N, 1] -> [B, N / hop_length, hidden_size]."""
  config: EncodecConfig

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    c = self.config
    padding = PAD_MODES[c.pad_mode]
    x = CausalConv1D(c.num_filters, c.kernel_size, padding=padding, name="layers_0")(
        x, stream=stream)
    index, channels = 1, c.num_filters
    for ratio in reversed(c.upsampling_ratios):
      for dilation in c.dilations:
        x = ResnetBlock(c, channels, dilation, name=f"layers_{index}")(x, stream=stream)
        index += 1
      channels *= 2
      x = CausalConv1D(channels, 2 * ratio, stride=ratio, padding=padding,
                       name=f"layers_{index + 1}")(nn.elu(x), stream=stream)
      index += 2
    if c.num_lstm_layers:
      x = LSTM(c.num_lstm_layers, name=f"layers_{index}")(x, stream=stream)
      index += 1
    return CausalConv1D(c.hidden_size, c.last_kernel_size, padding=padding,
                        name=f"layers_{index + 1}")(nn.elu(x), stream=stream)


def upsampling_layers(config: EncodecConfig) -> list[tuple[int, int, int]]:
  """(ratio, index of its transposed convolution, index of its first residual
  block) per decoder stage, in Hugging Face's numbering of `decoder.layers`
  (0: conv, 1: LSTM if any, then per stage ELU, transposed conv, residual blocks)."""
  step = 2 + config.num_residual_layers
  first = 3 if config.num_lstm_layers else 2
  return [(ratio, first + k * step, first + 1 + k * step)
          for k, ratio in enumerate(config.upsampling_ratios)]


class Decoder(nn.Module):
  """[B, T, hidden_size] -> [B, T * hop_length, 1]."""
  config: EncodecConfig

  @nn.compact
  def __call__(self, x, *, stream: bool = False):
    c = self.config
    padding = PAD_MODES[c.pad_mode]
    channels = c.num_filters * 2 ** len(c.upsampling_ratios)
    x = CausalConv1D(channels, c.kernel_size, padding=padding, name="layers_0")(
        x, stream=stream)
    if c.num_lstm_layers:
      x = LSTM(c.num_lstm_layers, name="layers_1")(x, stream=stream)
    for ratio, transposed, index in upsampling_layers(c):
      channels //= 2
      x = CausalConvTranspose1D(channels, 2 * ratio, ratio, name=f"layers_{transposed}")(
          nn.elu(x), stream=stream)
      for j, dilation in enumerate(c.dilations):
        x = ResnetBlock(c, channels, dilation, name=f"layers_{index + j}")(x, stream=stream)
    final = index + c.num_residual_layers + 1  # after the last blocks and an ELU
    return CausalConv1D(1, c.last_kernel_size, padding=padding, name=f"layers_{final}")(
        nn.elu(x), stream=stream)


class EncodecModel(CodecModule, nn.Module):
  """Waveform [B, N] <-> codes [B, N / hop_length, Q]; N a whole number of frames.

  The interface of `soundlm.codec.model.SoundStream` (inference only), so that
  `soundlm.codec.api.Codec` runs either."""
  config: EncodecConfig = EncodecConfig()

  def setup(self):
    c = self.config
    self.encoder = Encoder(c)
    self.decoder = Decoder(c)
    self.quantizer = ResidualVectorQuantizer(
        num_levels=c.num_levels, codebook_size=c.codebook_size, dim=c.hidden_size)

  def embed(self, wav, *, stream: bool = False):
    """[B, N] -> encoder output [B, N / hop_length, hidden_size]."""
    if wav.ndim != 2:
      raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
    if wav.shape[1] % self.hop_length:
      raise ValueError(
          f"wav length {wav.shape[1]} must be a multiple of hop_length {self.hop_length}")
    return self.encoder(wav[..., None].astype(jnp.float32), stream=stream)

  def encode(self, wav, *, num_levels: Optional[int] = None, stream: bool = False):
    """[B, N] -> int32 codes [B, N / hop_length, num_levels or Q]."""
    return self.quantizer.encode(self.embed(wav, stream=stream), num_levels)

  def decode(self, codes, *, stream: bool = False):
    """int32 codes [B, T, Q' <= Q] -> [B, T * hop_length] float32."""
    return self.decoder(self.quantizer.decode(codes), stream=stream)[..., 0]

  def __call__(self, wav):
    """Encodes and decodes [B, N] with every level (used to initialise)."""
    return self.decode(self.encode(wav))
