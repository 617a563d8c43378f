"""SoundStream losses (hinge adversarial, feature matching, multi-scale mel) and quality metrics."""
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from soundlm.codec.spectral import mel_spectrogram

LOG_FLOOR = 1e-5
MEL_WINDOWS = tuple(2 ** i for i in range(6, 12))  # 64 .. 2048 samples


def multiscale_mel_loss(target, estimate, sample_rate: int,
                        windows: Sequence[int] = MEL_WINDOWS, num_mels: int = 64,
                        alphas: Optional[Sequence[float]] = None):
  """Sum over windows s (hop s/4) of L1(mel) + alpha_s * L2(log mel).

  The L1 term is averaged over frames and mel bins; the L2 term is the
  root-mean-square over mel bins, averaged over frames; alpha_s defaults to
  sqrt(s / 2).
  """
  alphas = [math.sqrt(s / 2) for s in windows] if alphas is None else alphas
  if len(alphas) != len(windows):
    raise ValueError(f"alphas ({len(alphas)}) must match windows ({len(windows)})")
  total = 0.0
  for window, alpha in zip(windows, alphas):
    mel_t = mel_spectrogram(target, sample_rate, window, window // 4, num_mels)
    mel_e = mel_spectrogram(estimate, sample_rate, window, window // 4, num_mels)
    log_diff = jnp.log(mel_t + LOG_FLOOR) - jnp.log(mel_e + LOG_FLOOR)
    l2 = jnp.sqrt(jnp.mean(log_diff ** 2, axis=-1) + 1e-12)
    total = total + jnp.mean(jnp.abs(mel_t - mel_e)) + alpha * jnp.mean(l2)
  return total


def mel_distance(target, estimate, sample_rate: int, window: int = 1024, num_mels: int = 64):
  """Mean absolute log-mel difference (window 1024, hop 256): lower is closer."""
  mel_t = mel_spectrogram(target, sample_rate, window, window // 4, num_mels)
  mel_e = mel_spectrogram(estimate, sample_rate, window, window // 4, num_mels)
  return jnp.mean(jnp.abs(jnp.log(mel_t + LOG_FLOOR) - jnp.log(mel_e + LOG_FLOOR)))


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
