"""SoundStream losses (hinge adversarial, feature matching, multi-scale mel) and quality metrics."""
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from soundlm.codec.spectral import mel_spectrogram

# Floor of the training loss's log-mel term, on the scale of mel_spectrogram
# (unit-sum window: a full-scale sinusoid is 0.5): about -80 dB, so bins of
# near silence do not dominate the log term.
LOG_FLOOR = 1e-4
# mel_distance keeps its historical floor so its figures stay comparable.
DISTANCE_LOG_FLOOR = 1e-5
MEL_WINDOWS = tuple(2 ** i for i in range(6, 12))  # 64 .. 2048 samples


def multiscale_mel_terms(target, estimate, sample_rate: int,
                         windows: Sequence[int] = MEL_WINDOWS, num_mels: int = 64,
                         alphas: Optional[Sequence[float]] = None):
  """(L1 term, log term) of `multiscale_mel_loss`, each summed over windows."""
  alphas = [math.sqrt(s / 2) for s in windows] if alphas is None else alphas
  if len(alphas) != len(windows):
    raise ValueError(f"alphas ({len(alphas)}) must match windows ({len(windows)})")
  l1_total, log_total = 0.0, 0.0
  for window, alpha in zip(windows, alphas):
    mel_t = mel_spectrogram(target, sample_rate, window, window // 4, num_mels)
    mel_e = mel_spectrogram(estimate, sample_rate, window, window // 4, num_mels)
    log_diff = jnp.log(mel_t + LOG_FLOOR) - jnp.log(mel_e + LOG_FLOOR)
    l2 = jnp.sqrt(jnp.mean(log_diff ** 2, axis=-1) + 1e-12)
    l1_total = l1_total + (window / 2) * jnp.mean(jnp.abs(mel_t - mel_e))
    log_total = log_total + alpha * jnp.mean(l2)
  return l1_total, log_total


def multiscale_mel_loss(target, estimate, sample_rate: int,
                        windows: Sequence[int] = MEL_WINDOWS, num_mels: int = 64,
                        alphas: Optional[Sequence[float]] = None):
  """Sum over windows s (hop s/4) of L1(mel) + alpha_s * L2(log mel).

  The L1 term is averaged over frames and mel bins and taken on the
  magnitudes of an unnormalised Hann window (`mel_spectrogram`'s times s/2,
  the scale of a plain STFT as in the paper): on the unit-sum scale it was
  ~1e-4 of the loss, here ~0.1-0.3 of the log term on speech. The L2 term is
  the root-mean-square over mel bins of the log-mel difference (floor
  LOG_FLOOR on the unit-sum scale), averaged over frames; alpha_s defaults
  to sqrt(s / 2).
  """
  l1, log = multiscale_mel_terms(target, estimate, sample_rate, windows, num_mels, alphas)
  return l1 + log


def mel_distance(target, estimate, sample_rate: int, window: int = 1024, num_mels: int = 64):
  """Mean absolute log-mel difference (window 1024, hop 256): lower is closer."""
  mel_t = mel_spectrogram(target, sample_rate, window, window // 4, num_mels)
  mel_e = mel_spectrogram(estimate, sample_rate, window, window // 4, num_mels)
  return jnp.mean(jnp.abs(jnp.log(mel_t + DISTANCE_LOG_FLOOR)
                         - jnp.log(mel_e + DISTANCE_LOG_FLOOR)))


# Time-domain reconstruction terms of an error signal x - x_hat.
WAVEFORM_LOSSES = {"l1": lambda error: jnp.mean(jnp.abs(error)),
                   "mse": lambda error: jnp.mean(error ** 2)}


def si_snr(target, estimate, eps: float = 1e-8):
  """Scale-invariant signal-to-noise ratio in dB per example [B] (higher is better)."""
  target = target - target.mean(-1, keepdims=True)
  estimate = estimate - estimate.mean(-1, keepdims=True)
  scale = jnp.sum(estimate * target, -1, keepdims=True) / (
      jnp.sum(target * target, -1, keepdims=True) + eps)
  projection = scale * target
  noise = estimate - projection
  return 10.0 * jnp.log10((jnp.sum(projection ** 2, -1) + eps) / (jnp.sum(noise ** 2, -1) + eps))


def discriminator_hinge_loss(real_logits, fake_logits):
  """Mean over discriminators of E[relu(1 - D(x))] + E[relu(1 + D(G(x)))]."""
  terms = [jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
           for r, f in zip(real_logits, fake_logits)]
  return sum(terms) / len(terms)


def generator_hinge_loss(fake_logits):
  """Mean over discriminators of E[relu(1 - D(G(x)))]."""
  return sum(jnp.mean(jax.nn.relu(1.0 - f)) for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real_features, fake_features):
  """Mean over discriminators and layers of the mean absolute feature difference."""
  terms = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
           for real, fake in zip(real_features, fake_features)
           for r, f in zip(real, fake)]
  return sum(terms) / len(terms)


def envelope_correlation(target, estimate, frame: int = 320):
  """Pearson correlation [B] of the frame-RMS envelopes (non-overlapping frames
  of `frame` samples, 20 ms at 16 kHz). It rises as soon as the output follows
  the input's loudness, long before the waveforms align (see `si_snr`)."""
  count = target.shape[-1] // frame
  if count < 2:
    raise ValueError(f"need at least 2 frames of {frame} samples, got {target.shape[-1]}")
  envelope = lambda x: jnp.sqrt(jnp.mean(  # noqa: E731
      x[..., :count * frame].reshape(x.shape[:-1] + (count, frame)) ** 2, -1) + 1e-12)
  a, b = envelope(target), envelope(estimate)
  a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
  return jnp.sum(a * b, -1) / jnp.sqrt(jnp.sum(a * a, -1) * jnp.sum(b * b, -1) + 1e-12)


def best_lag(target, estimate, max_lag: int):
  """(lag [B] int32, |normalised cross-correlation| [B] at that lag): the shift
  in samples, within +-max_lag, at which `estimate` best matches `target` up
  to sign, as SI-SNR is (positive: the estimate is late). A codec whose output is a delayed or
  phase-shifted copy shows a non-zero lag and a high peak while its SI-SNR is
  still low."""
  n = target.shape[-1]
  size = 1 << (2 * n - 1).bit_length()
  spectrum = jnp.fft.rfft(estimate, size) * jnp.conj(jnp.fft.rfft(target, size))
  xcorr = jnp.fft.irfft(spectrum, size)  # index k: estimate[t + k] . target[t]
  lags = jnp.arange(-max_lag, max_lag + 1)
  values = jnp.abs(xcorr[..., lags % size])
  norm = jnp.sqrt(jnp.sum(target ** 2, -1) * jnp.sum(estimate ** 2, -1) + 1e-12)
  index = jnp.argmax(values, -1)
  peak = jnp.take_along_axis(values, index[..., None], -1)[..., 0] / norm
  return lags[index].astype(jnp.int32), peak


def mismatched(wav):
  """Each example paired with another clip of the batch (the next row; a lone
  example with itself reversed in time): the input of a no-information baseline."""
  return jnp.roll(wav, 1, axis=0) if wav.shape[0] > 1 else wav[:, ::-1]
