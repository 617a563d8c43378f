"""Codec spectral losses: every mel filter holds a frequency bin at every loss
window, and both terms of the multi-scale mel loss count on real speech."""
import numpy as np
import pytest

from soundlm.codec import losses
from soundlm.codec.data import WaveformCrops
from soundlm.io.audio import mel_filterbank


@pytest.mark.parametrize("sample_rate", [16_000, 24_000])
def test_every_mel_filter_has_weight_at_every_window(sample_rate):
  for window in (64, 128, 256, 512, 1024, 2048):
    bank = mel_filterbank(sample_rate, window, 64)
    assert bank.shape == (window // 2 + 1, 64)
    assert np.all(bank.max(axis=0) >= 0.5), (window, np.flatnonzero(bank.max(axis=0) < 0.5))
    # Bands stay ordered by frequency: each filter's weighted centre is not
    # below its lower neighbour's.
    freqs = np.arange(window // 2 + 1)
    centres = (freqs[:, None] * bank).sum(0) / bank.sum(0)
    assert np.all(np.diff(centres) >= -1e-6), (window, centres)


def test_wide_bands_keep_their_triangles():
  """Where mel bands are wider than a bin, widening changes nothing: at window
  2048 the filters peak at 1 and every bin's weights of two neighbours sum to 1."""
  bank = mel_filterbank(16_000, 2048, 64)
  covered = bank[(bank > 0).sum(1) == 2]
  np.testing.assert_allclose(covered.sum(1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def speech():
  return next(WaveformCrops(batch_size=8, crop_length=8000, split="validation",
                            seed=1))["waveform"]


def test_l1_and_log_terms_both_count_on_speech(speech):
  rng = np.random.default_rng(0)
  rms = np.sqrt(np.mean(speech ** 2))
  estimates = {"6 dB quieter": 0.5 * speech,
               "noise at the same level": rms * rng.normal(size=speech.shape),
               "hiss for speech": 0.01 * rng.normal(size=speech.shape)}
  for name, estimate in estimates.items():
    l1, log = losses.multiscale_mel_terms(speech, estimate.astype(np.float32), 16_000)
    assert 0.1 < float(l1) / float(log) < 10.0, (name, float(l1), float(log))


def test_mel_loss_zero_for_the_target_and_falls_as_the_estimate_nears_it(speech):
  assert float(losses.multiscale_mel_loss(speech, speech, 16_000)) < 1e-3
  values = [float(losses.multiscale_mel_loss(speech, gain * speech, 16_000))
            for gain in (0.25, 0.5, 0.9)]
  assert values[0] > values[1] > values[2] > 0, values


def test_best_lag_finds_a_delay_and_a_sign_flip(speech):
  late = np.pad(speech, ((0, 0), (37, 0)))[:, :speech.shape[1]]
  lag, peak = losses.best_lag(speech, late, max_lag=320)
  np.testing.assert_array_equal(lag, 37)
  assert np.all(np.asarray(peak) > 0.95), peak
  lag, peak = losses.best_lag(speech, -0.5 * np.roll(speech, -5, axis=1), max_lag=320)
  np.testing.assert_array_equal(lag, -5)
  assert np.all(np.asarray(peak) > 0.95), peak
  _, peak = losses.best_lag(speech, losses.mismatched(speech), max_lag=320)
  assert np.all(np.asarray(peak) < 0.5), peak


def test_envelope_correlation_follows_loudness_not_phase(speech):
  # A scaled copy, and one whose phase is scrambled within each 20 ms frame.
  np.testing.assert_allclose(losses.envelope_correlation(speech, 0.3 * speech), 1.0, atol=1e-5)
  frames = speech.reshape(8, -1, 320)
  scrambled = np.fft.irfft(np.abs(np.fft.rfft(frames)) * np.exp(
      2j * np.pi * np.random.default_rng(0).random(frames.shape[:-1] + (161,))), 320)
  scrambled = scrambled.reshape(speech.shape).astype(np.float32)
  assert np.all(np.asarray(losses.envelope_correlation(speech, scrambled)) > 0.9)
  assert np.all(np.asarray(losses.si_snr(speech, scrambled)) < 0.0)
  assert np.mean(np.asarray(losses.envelope_correlation(speech, losses.mismatched(speech)))) < 0.5
