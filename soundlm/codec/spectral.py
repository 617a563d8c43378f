"""Short-time Fourier transforms and mel spectrograms in jnp (for losses and discriminators)."""
import jax.numpy as jnp
import numpy as np

from soundlm.io.audio import mel_filterbank


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


def mel_spectrogram(x, sample_rate: int, window: int, hop: int, num_mels: int):
  """[B, N] -> mel magnitudes [B, frames, num_mels]."""
  magnitude = jnp.abs(stft(x.astype(jnp.float32), window, hop))
  return magnitude @ mel_filterbank(sample_rate, window, num_mels)
