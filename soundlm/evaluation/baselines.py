"""Reference outputs that a codec's figures are read against, made from the input.

* silence: no output at all (every figure at its floor, or undefined).
* noise: white Gaussian noise at the input's RMS: right loudness, no content.
* delayed: the input itself, late by one codec frame: perfect content and
  quality, misaligned by a few milliseconds. Time-aligning metrics (ViSQOL,
  PESQ) score it near their best, waveform metrics (SI-SNR) near their worst,
  so it shows what a figure rewards.
"""
import numpy as np

BASELINES = ("silence", "noise", "delayed")


def silence(wav: np.ndarray) -> np.ndarray:
  return np.zeros_like(wav)


def noise(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """White noise with the RMS of `wav`."""
  rms = np.sqrt(np.mean(np.square(wav, dtype=np.float64)))
  return (rng.standard_normal(wav.shape) * rms).astype(wav.dtype)


def delayed(wav: np.ndarray, samples: int) -> np.ndarray:
  """`wav` late by `samples` (zeros first), cut to its length."""
  if not 0 < samples < wav.shape[-1]:
    raise ValueError(f"delay of {samples} samples: expected 1..{wav.shape[-1] - 1}")
  return np.concatenate([np.zeros(samples, wav.dtype), wav[:-samples]])


def make(name: str, wav: np.ndarray, *, rng: np.random.Generator, delay: int) -> np.ndarray:
  """Baseline `name` of the clip `wav` (`delay` in samples, for 'delayed')."""
  if name == "silence":
    return silence(wav)
  if name == "noise":
    return noise(wav, rng)
  if name == "delayed":
    return delayed(wav, delay)
  raise ValueError(f"baseline {name!r}: expected one of {', '.join(BASELINES)}")
