"""Kaldi-compatible log-mel filter banks in JAX, and waveform checks.

The computation reproduces the SeamlessM4T feature extractor that w2v-BERT 2.0
was trained with (16-bit scaled samples, 25 ms Povey windows every 10 ms, DC
removal, pre-emphasis 0.97, 512-point FFT power spectrum, 80 Kaldi-mel
filters from 20 Hz, natural log floored at float32 eps), so imported
checkpoints see the features they expect. The paper-style front end uses the
same features.
"""
import functools

import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 400          # 25 ms
HOP = 160             # 10 ms: 100 frames per second
FFT = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07
SAMPLES_PER_TOKEN = SAMPLE_RATE // 25  # 640
# Zeros added on both sides before framing for tokenization: fbank frame t
# then spans samples [160 t - 120, 160 t + 280), frames 4j..4j+3 are centred
# on token j's 40 ms span, and there are N // 160 >= 4 * (N // 640) of them.
TOKEN_PAD = 120


def num_tokens(num_samples: int) -> int:
  """Tokens (25 Hz frames) for `num_samples` at 16 kHz: N // 640."""
  return num_samples // SAMPLES_PER_TOKEN


def num_fbank_frames(num_samples: int, pad: int = 0) -> int:
  return 1 + (num_samples + 2 * pad - WINDOW) // HOP


def check_waveform(wav, sample_rate: int | None = None, name: str = "wav") -> None:
  """Raises ValueError unless `wav` is a float [B, N] batch of 16 kHz mono clips
  at least one 25 Hz frame (640 samples) long."""
  if sample_rate is not None and int(sample_rate) != SAMPLE_RATE:
    raise ValueError(f"sample_rate: expected {SAMPLE_RATE} Hz, got {sample_rate}; "
                     "resample the audio first")
  shape = tuple(np.shape(wav))
  if len(shape) == 3:
    raise ValueError(f"{name}: expected mono audio [batch, samples], got shape {shape} "
                     "(multi-channel audio); mix it down to one channel first")
  if len(shape) != 2:
    raise ValueError(f"{name}: expected a float32 batch [batch, samples], got shape {shape}")
  dtype = wav.dtype if hasattr(wav, "dtype") else np.asarray(wav).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name}: expected floating-point samples in [-1, 1], got dtype {dtype}")
  if shape[1] < SAMPLES_PER_TOKEN:
    raise ValueError(f"{name}: clips of {shape[1]} samples are shorter than one 25 Hz "
                     f"frame ({SAMPLES_PER_TOKEN} samples at {SAMPLE_RATE} Hz)")


def _hz_to_mel(hz):
  return 1127.0 * np.log(1.0 + hz / 700.0)


@functools.lru_cache(maxsize=8)
def mel_filters(num_mel_bins: int = 80) -> np.ndarray:
  """[FFT/2 + 1, num_mel_bins] triangles, linear in mel between 20 Hz and 8 kHz."""
  mel_points = np.linspace(_hz_to_mel(20.0), _hz_to_mel(SAMPLE_RATE / 2), num_mel_bins + 2)
  bin_mels = _hz_to_mel(SAMPLE_RATE / FFT * np.arange(FFT // 2 + 1))
  slopes = mel_points[None, :] - bin_mels[:, None]
  widths = np.diff(mel_points)
  down = -slopes[:, :-2] / widths[:-1]
  up = slopes[:, 2:] / widths[1:]
  return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def povey_window() -> np.ndarray:
  return (np.hanning(WINDOW) ** 0.85).astype(np.float32)


def log_mel(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0) -> jnp.ndarray:
  """[B, N] float waveform in [-1, 1] -> [B, F, num_mel_bins] Kaldi log-mels,
  F = 1 + (N + 2 pad - 400) // 160."""
  x = wav.astype(jnp.float32) * 32768.0
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad)))
  frames_count = num_fbank_frames(wav.shape[1], pad)
  if frames_count < 1:
    raise ValueError(f"wav: {wav.shape[1]} samples are shorter than one {WINDOW}-sample "
                     "analysis window")
  index = HOP * np.arange(frames_count)[:, None] + np.arange(WINDOW)[None, :]
  frames = x[:, index]
  frames = frames - frames.mean(axis=-1, keepdims=True)
  frames = jnp.concatenate(
      [frames[..., :1] * (1.0 - PREEMPHASIS),
       frames[..., 1:] - PREEMPHASIS * frames[..., :-1]], axis=-1)
  spectrum = jnp.fft.rfft(frames * povey_window(), n=FFT, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel = jnp.einsum("btf,fm->btm", power, mel_filters(num_mel_bins), precision="highest")
  return jnp.log(jnp.maximum(mel, MEL_FLOOR))


def normalize_per_bin(features: jnp.ndarray) -> jnp.ndarray:
  """Zero mean, unit (unbiased) variance per mel bin over each clip's frames."""
  mean = features.mean(axis=1, keepdims=True)
  var = features.var(axis=1, keepdims=True, ddof=1)
  return (features - mean) / jnp.sqrt(var + 1e-7)


def stack_frames(features: jnp.ndarray, stride: int = 2) -> jnp.ndarray:
  """[B, F, M] -> [B, F // stride, M * stride]; a trailing partial group is dropped."""
  batch, frames, bins = features.shape
  usable = frames - frames % stride
  return features[:, :usable].reshape(batch, usable // stride, bins * stride)


def seamless_features(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0) -> jnp.ndarray:
  """w2v-BERT 2.0 input features [B, F // 2, 2 * num_mel_bins] (50 Hz)."""
  return stack_frames(normalize_per_bin(log_mel(wav, num_mel_bins, pad)))


def token_aligned_log_mel(wav: jnp.ndarray, num_mel_bins: int = 80) -> jnp.ndarray:
  """Normalised log-mels [B, 4 * (N // 640), M]: four 100 Hz frames per token."""
  features = normalize_per_bin(log_mel(wav, num_mel_bins, TOKEN_PAD))
  return features[:, :4 * num_tokens(wav.shape[1])]
