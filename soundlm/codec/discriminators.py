"""SoundStream discriminators: multi-resolution waveform and complex-STFT.

Each discriminator returns (logits, features): logits [B, T'] per time step
(for hinge losses) and the activations of every hidden layer (for feature
matching). Discriminators see whole crops, so they need not be causal.
"""
from typing import Sequence

import flax.linen as nn
import gin
import jax.numpy as jnp

from soundlm.codec.spectral import stft
from soundlm.layers import initializers

_SLOPE = 0.2


def _conv(features, kernel, strides=None, groups=1, axes=("conv_in", "conv_out"), **kw):
  return nn.Conv(features, kernel, strides=strides, padding="SAME",
                 feature_group_count=groups,
                 kernel_init=initializers.kernel((None,) * len(kernel) + tuple(axes)),
                 bias_init=initializers.zeros(tuple(axes[1:])), **kw)


class WaveDiscriminator(nn.Module):
  """MelGAN-style: conv(15), grouped strided convs (41, stride 4), conv(5), conv(3) -> 1."""
  channels: int = 16
  max_channels: int = 1024
  num_downsamples: int = 4
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, wav):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = wav[..., None].astype(self.dtype)
    features = []
    x = nn.leaky_relu(_conv(self.channels, (15,), axes=(None, "conv_out"), **kw)(x), _SLOPE)
    features.append(x)
    channels = self.channels
    for _ in range(self.num_downsamples):
      groups = max(channels // 4, 1)
      out = min(channels * 4, self.max_channels)
      out -= out % groups
      x = nn.leaky_relu(
          _conv(out, (41,), (4,), groups, axes=(None, "conv_out"), **kw)(x), _SLOPE)
      features.append(x)
      channels = out
    x = nn.leaky_relu(_conv(channels, (5,), **kw)(x), _SLOPE)
    features.append(x)
    logits = _conv(1, (3,), axes=("conv_in", None), **kw)(x)
    return logits[..., 0].astype(jnp.float32), features


class STFTDiscriminator(nn.Module):
  """2-D convolutions over the complex STFT (real and imaginary channels).

  conv 7x7 (C) -> residual blocks [3x3 conv, (s_t+2)x(s_f+2) conv with stride
  (s_t, s_f)], strides alternating (1, 2) and (2, 2) -> a 1 x F' convolution
  that collapses the remaining frequency bins into one logit per frame.
  """
  channels: int = 32
  multipliers: Sequence[int] = (1, 2, 4, 4, 8, 8)
  window: int = 1024
  hop: int = 256
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, wav):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    spec = stft(wav.astype(jnp.float32), self.window, self.hop)[..., :-1]  # drop Nyquist
    # Unit-sum window makes values tiny; rescale to order one for the convolutions.
    spec = spec * (self.window / 2)
    x = jnp.stack([spec.real, spec.imag], -1).astype(self.dtype)
    x = nn.leaky_relu(_conv(self.channels, (7, 7), axes=(None, "conv_out"), **kw)(x), _SLOPE)
    features = [x]
    for i, multiplier in enumerate(self.multipliers):
      stride = (1, 2) if i % 2 == 0 else (2, 2)
      out = self.channels * multiplier
      y = nn.leaky_relu(_conv(x.shape[-1], (3, 3), **kw)(x), _SLOPE)
      y = _conv(out, (stride[0] + 2, stride[1] + 2), stride, **kw)(y)
      shortcut = _conv(out, (1, 1), stride, **kw)(x)
      x = nn.leaky_relu(y + shortcut, _SLOPE)
      features.append(x)
    logits = nn.Conv(1, (1, x.shape[2]), padding="VALID", **kw,
                     kernel_init=initializers.kernel((None, None, "conv_in", None)),
                     bias_init=initializers.zeros((None,)))(x)
    return logits[..., 0, 0].astype(jnp.float32), features


@gin.configurable
class SoundStreamDiscriminator(nn.Module):
  """Waveform discriminators at 1x, 2x, 4x downsampling plus the STFT discriminator.

  Returns lists (one entry per discriminator) of logits and of feature lists.
  """
  wave_channels: int = 16
  wave_max_channels: int = 1024
  num_scales: int = 3
  stft_channels: int = 32
  stft_multipliers: Sequence[int] = (1, 2, 4, 4, 8, 8)
  stft_window: int = 1024
  stft_hop: int = 256
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, wav):
    if wav.ndim != 2:
      raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    outputs = []
    x = wav
    for scale in range(self.num_scales):
      if scale:
        x = nn.avg_pool(x[..., None], (4,), (2,), padding="SAME",
                        count_include_pad=False)[..., 0]
      outputs.append(WaveDiscriminator(self.wave_channels, self.wave_max_channels,
                                       name=f"wave_{scale}", **kw)(x))
    outputs.append(STFTDiscriminator(self.stft_channels, tuple(self.stft_multipliers),
                                     self.stft_window, self.stft_hop, name="stft", **kw)(wav))
    logits, features = zip(*outputs)
    return list(logits), list(features)
