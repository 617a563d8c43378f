"""Short-time Fourier transforms and mel spectrograms in jnp (for losses and discriminators)."""
import functools

import jax.numpy as jnp
import numpy as np


def frames(x, window: int, hop: int):
  """[B, N] -> [B, 1 + (N - window) // hop, window] (no padding)."""
  if x.shape[-1] < window:
    raise ValueError(f"signal of {x.shape[-1]} samples is shorter than the window {window}")
  count = 1 + (x.shape[-1] - window) // hop
  index = np.arange(count)[:, None] * hop + np.arange(window)[None]
  return x[..., index]


def stft(x, window: int, hop: int):
  """[B, N] -> complex [B, frames, window // 2 + 1], Hann window normalised to unit sum.

  The normalisation keeps magnitudes comparable across window sizes.
  """
  taper = np.hanning(window + 1)[:-1].astype(np.float32)
  taper = taper / taper.sum()
  return jnp.fft.rfft(frames(x, window, hop) * taper, axis=-1)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int, window: int, num_mels: int) -> np.ndarray:
  """[window // 2 + 1, num_mels] triangular HTK-mel filters from 0 Hz to Nyquist.

  Each triangle reaches at least one frequency bin either side of its centre:
  a mel band narrower than a bin (the low bands of short windows) would
  otherwise hold no bin at all and contribute nothing. Widened neighbours
  share bins, so at short windows the low bands overlap.
  """
  hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
  mel_to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
  edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), num_mels + 2))
  freqs = np.linspace(0.0, sample_rate / 2, window // 2 + 1)
  bin_width = sample_rate / window
  center = edges[1:-1]
  lower = np.minimum(edges[:-2], center - bin_width)
  upper = np.maximum(edges[2:], center + bin_width)
  rising = (freqs[:, None] - lower) / (center - lower)
  falling = (upper - freqs[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def mel_spectrogram(x, sample_rate: int, window: int, hop: int, num_mels: int):
  """[B, N] -> mel magnitudes [B, frames, num_mels]."""
  magnitude = jnp.abs(stft(x.astype(jnp.float32), window, hop))
  return magnitude @ mel_filterbank(sample_rate, window, num_mels)
