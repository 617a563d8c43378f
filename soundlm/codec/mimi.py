"""Mimi (Défossez et al. 2024, arXiv 2410.00037) for inference, as Hugging
Face's `MimiModel` computes it, to run public checkpoints such as kyutai/mimi
(`soundlm.codec.hf_mimi` loads them).

Encoder: the SEANet encoder of `soundlm.codec.encodec` without LSTMs (25 Hz
for kyutai/mimi) -> a causal transformer (RoPE, layer scale, attention over a
sliding window) -> a strided convolution down to the code rate (12.5 Hz).
The split quantizer codes the latents twice, each half through its own
projections: `num_semantic_levels` levels of a semantic residual quantizer
(distilled from WavLM in training) and the acoustic levels of a second one
that starts from the latents again, not from the semantic residual; decoding
sums both halves. The decoder mirrors the encoder (transposed convolution up,
transformer, SEANet decoder). The model is run whole: the transformers attend
over the full clip, so there are no chunked streams.

Submodules are named after Hugging Face's (`encoder_transformer/layers_0/
self_attn/q_proj` is `encoder_transformer.layers.0.self_attn.q_proj`).
"""
import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from soundlm.codec.encodec import Decoder, EncodecConfig, Encoder
from soundlm.codec.model import CodecModule
from soundlm.layers.conv import CausalConvTranspose1D
from soundlm.layers.rvq import ResidualVectorQuantizer


@dataclasses.dataclass(frozen=True)
class MimiConfig:
  """Hyperparameters of one Mimi (the defaults are kyutai/mimi's). `num_levels`
  is how many of the checkpoint's `num_quantizers` levels a call uses by default."""
  sample_rate: int = 24_000
  num_filters: int = 64
  hidden_size: int = 512
  upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)
  kernel_size: int = 7
  last_kernel_size: int = 3
  residual_kernel_size: int = 3
  dilation_growth_rate: int = 2
  num_residual_layers: int = 1
  compress: int = 2
  use_conv_shortcut: bool = False
  pad_mode: str = "constant"
  latent_stride: int = 2  # SEANet frames per code frame
  num_layers: int = 8
  num_heads: int = 8
  num_kv_heads: int = 8
  head_dim: int = 64
  intermediate_size: int = 2048
  rope_theta: float = 10_000.0
  sliding_window: Optional[int] = 250
  norm_eps: float = 1e-5
  codebook_size: int = 2048
  codebook_dim: int = 256
  num_quantizers: int = 32
  num_semantic_levels: int = 1
  num_levels: int = 32

  def __post_init__(self):
    object.__setattr__(self, "upsampling_ratios", tuple(self.upsampling_ratios))
    for name in ("latent_stride", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "codebook_dim", "num_quantizers",
                 "num_semantic_levels"):
      if getattr(self, name) < 1:
        raise ValueError(f"MimiConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"MimiConfig.num_heads {self.num_heads} must be a multiple of "
                       f"num_kv_heads {self.num_kv_heads}")
    if self.sliding_window is not None and self.sliding_window < 1:
      raise ValueError(f"MimiConfig.sliding_window must be >= 1 or None, got "
                       f"{self.sliding_window}")
    if self.num_semantic_levels >= self.num_quantizers:
      raise ValueError(f"MimiConfig.num_semantic_levels {self.num_semantic_levels} must be "
                       f"below num_quantizers {self.num_quantizers}")
    if not self.num_semantic_levels <= self.num_levels <= self.num_quantizers:
      raise ValueError(f"MimiConfig.num_levels must be in {self.num_semantic_levels}.."
                       f"{self.num_quantizers} (the semantic levels come first), got "
                       f"{self.num_levels}")

  @property
  def seanet(self) -> EncodecConfig:
    """The SEANet encoder/decoder: EnCodec's layers without LSTMs."""
    return EncodecConfig(
        sample_rate=self.sample_rate, num_filters=self.num_filters,
        hidden_size=self.hidden_size, upsampling_ratios=self.upsampling_ratios,
        kernel_size=self.kernel_size, last_kernel_size=self.last_kernel_size,
        residual_kernel_size=self.residual_kernel_size,
        dilation_growth_rate=self.dilation_growth_rate,
        num_residual_layers=self.num_residual_layers, compress=self.compress,
        num_lstm_layers=0, use_conv_shortcut=self.use_conv_shortcut, pad_mode=self.pad_mode)

  @property
  def hop_length(self) -> int:
    return math.prod(self.upsampling_ratios) * self.latent_stride

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  @property
  def stream_warmup_frames(self) -> int:
    """Mimi runs whole clips (`soundlm.codec.api.Codec` refuses streams)."""
    return 0


class LayerScale(nn.Module):
  """Per-channel scale of a residual branch."""
  width: int

  @nn.compact
  def __call__(self, x):
    return x * self.param("scale", nn.initializers.constant(0.01), (self.width,))


def rotary(x, positions, theta: float):
  """Rotary position embedding of [B, T, H, D] in the half-split layout
  (Hugging Face's rotate_half) at `positions` [T]."""
  dim = x.shape[-1]
  inv_freq = 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions.astype(jnp.float32)[:, None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)[:, None]  # [T, 1, D]
  first, second = jnp.split(x, 2, axis=-1)
  return x * jnp.cos(angles) + jnp.concatenate([-second, first], axis=-1) * jnp.sin(angles)


class Attention(nn.Module):
  """Causal self-attention over the last `sliding_window` steps, keys and values
  shared by groups of num_heads / num_kv_heads query heads."""
  config: MimiConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    batch, length, _ = x.shape

    def project(name, heads):
      y = nn.Dense(heads * c.head_dim, use_bias=False, name=name)(x)
      return y.reshape(batch, length, heads, c.head_dim)

    positions = jnp.arange(length)
    q = rotary(project("q_proj", c.num_heads), positions, c.rope_theta)
    k = rotary(project("k_proj", c.num_kv_heads), positions, c.rope_theta)
    v = project("v_proj", c.num_kv_heads)
    group = c.num_heads // c.num_kv_heads
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c.head_dim)
    distance = positions[:, None] - positions[None, :]
    allowed = distance >= 0
    if c.sliding_window is not None:
      allowed &= distance < c.sliding_window
    weights = jax.nn.softmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, -1)
    return nn.Dense(c.hidden_size, use_bias=False, name="o_proj")(out)


class MLP(nn.Module):
  """fc2(GELU(fc1(x))), no biases."""
  config: MimiConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    x = nn.Dense(c.intermediate_size, use_bias=False, name="fc1")(x)
    return nn.Dense(c.hidden_size, use_bias=False, name="fc2")(
        jax.nn.gelu(x, approximate=False))


class TransformerLayer(nn.Module):
  """Pre-norm attention and GELU MLP, each residual branch scaled per channel."""
  config: MimiConfig

  @nn.compact
  def __call__(self, x):
    c = self.config

    def norm(name):
      return nn.LayerNorm(epsilon=c.norm_eps, use_fast_variance=False, name=name)

    x = x + LayerScale(c.hidden_size, name="self_attn_layer_scale")(
        Attention(c, name="self_attn")(norm("input_layernorm")(x)))
    y = norm("post_attention_layernorm")(x)
    y = MLP(c, name="mlp")(y)
    return x + LayerScale(c.hidden_size, name="mlp_layer_scale")(y)


class Transformer(nn.Module):
  """[B, T, hidden] -> [B, T, hidden], positions 0..T-1."""
  config: MimiConfig

  @nn.compact
  def __call__(self, x):
    for i in range(self.config.num_layers):
      x = TransformerLayer(self.config, name=f"layers_{i}")(x)
    return x


class Downsample(nn.Module):
  """Strided convolution (kernel 2 * stride, no bias) whose start padding
  repeats the first frame (Hugging Face's pad_mode='replicate')."""
  features: int
  stride: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (2 * self.stride, x.shape[-1], self.features))
    x = jnp.concatenate([jnp.repeat(x[:, :1], self.stride, axis=1), x], axis=1)
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(self.stride,),
                                        padding="VALID",
                                        dimension_numbers=("NWC", "WIO", "NWC"))


class QuantizerHalf(nn.Module):
  """One residual quantizer of the split, with its 1x1 projections into and out
  of the codebook space (identity when that space is the latent width)."""
  config: MimiConfig
  num_levels: int

  def setup(self):
    c = self.config
    self.projected = c.codebook_dim != c.hidden_size
    if self.projected:
      self.input_proj = nn.Dense(c.codebook_dim, use_bias=False)
      self.output_proj = nn.Dense(c.hidden_size, use_bias=False)
    self.layers = ResidualVectorQuantizer(num_levels=self.num_levels,
                                          codebook_size=c.codebook_size, dim=c.codebook_dim)

  def encode(self, x, num_levels: int):
    return self.layers.encode(self.input_proj(x) if self.projected else x, num_levels)

  def decode(self, codes):
    y = self.layers.decode(codes)
    return self.output_proj(y) if self.projected else y


class SplitQuantizer(nn.Module):
  """Semantic levels then acoustic levels, both coding the same latents."""
  config: MimiConfig

  def setup(self):
    c = self.config
    self.semantic_residual_vector_quantizer = QuantizerHalf(c, c.num_semantic_levels)
    self.acoustic_residual_vector_quantizer = QuantizerHalf(
        c, c.num_quantizers - c.num_semantic_levels)

  def encode(self, x, num_levels: int):
    semantic = self.config.num_semantic_levels
    codes = self.semantic_residual_vector_quantizer.encode(x, semantic)
    if num_levels > semantic:
      codes = jnp.concatenate(
          [codes, self.acoustic_residual_vector_quantizer.encode(x, num_levels - semantic)], -1)
    return codes

  def decode(self, codes):
    semantic = self.config.num_semantic_levels
    y = self.semantic_residual_vector_quantizer.decode(codes[..., :semantic])
    if codes.shape[-1] > semantic:
      y = y + self.acoustic_residual_vector_quantizer.decode(codes[..., semantic:])
    return y


class MimiModel(CodecModule, nn.Module):
  """Waveform [B, N] <-> codes [B, N / hop_length, Q]; N a whole number of frames.

  The interface of `soundlm.codec.model.SoundStream` (inference only, no
  streams), so that `soundlm.codec.api.Codec` runs it."""
  config: MimiConfig = MimiConfig()
  streams = False

  def setup(self):
    c = self.config
    self.encoder = Encoder(c.seanet)
    self.encoder_transformer = Transformer(c)
    self.downsample = Downsample(c.hidden_size, c.latent_stride)
    self.quantizer = SplitQuantizer(c)
    self.upsample = CausalConvTranspose1D(c.hidden_size, 2 * c.latent_stride,
                                          c.latent_stride, use_bias=False)
    self.decoder_transformer = Transformer(c)
    self.decoder = Decoder(c.seanet)

  def embed(self, wav):
    """[B, N] -> latents [B, N / hop_length, hidden_size] (what the quantizer codes)."""
    if wav.ndim != 2:
      raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
    if wav.shape[1] % self.hop_length:
      raise ValueError(
          f"wav length {wav.shape[1]} must be a multiple of hop_length {self.hop_length}")
    x = self.encoder(wav[..., None].astype(jnp.float32))
    return self.downsample(self.encoder_transformer(x))

  def encode(self, wav, *, num_levels: Optional[int] = None):
    """[B, N] -> int32 codes [B, N / hop_length, num_levels (default config.num_levels)]."""
    num_levels = self.config.num_levels if num_levels is None else num_levels
    if not self.config.num_semantic_levels <= num_levels <= self.config.num_quantizers:
      raise ValueError(f"num_levels must be in {self.config.num_semantic_levels}.."
                       f"{self.config.num_quantizers}, got {num_levels}")
    return self.quantizer.encode(self.embed(wav), num_levels)

  def decode(self, codes):
    """int32 codes [B, T, Q'] -> [B, T * hop_length] float32."""
    if codes.ndim != 3 or not 1 <= codes.shape[-1] <= self.config.num_quantizers:
      raise ValueError(f"codes must be [batch, frames, 1..{self.config.num_quantizers}], "
                       f"got shape {codes.shape}")
    x = self.upsample(self.quantizer.decode(codes))
    return self.decoder(self.decoder_transformer(x))[..., 0]

  def __call__(self, wav):
    """Encodes and decodes [B, N] with every level (used to initialise)."""
    return self.decode(self.encode(wav, num_levels=self.config.num_quantizers))
