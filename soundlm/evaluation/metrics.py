"""Quality figures of one decoded clip against its reference, both mono 16 kHz.

    figures = metrics.score(reference, estimate)        # {'visqol': 4.1, 'pesq': ...}

* visqol: ViSQOL v3 MOS-LQO in speech mode (1 to 5, higher is better), from
  the pure-Python port `visqol-python` with its polynomial similarity-to-MOS
  mapping (the lattice model would need a TFLite runtime).
* pesq: wide-band PESQ MOS-LQO (ITU-T P.862.2; about 1.0 to 4.64).
* stoi: short-time objective intelligibility (0 to 1).
* si_snr: scale-invariant SNR in dB (`soundlm.codec.losses.si_snr`): it needs
  the waveform itself, so a copy shifted by a few milliseconds scores low.
* mel_distance: mean absolute log-mel difference (`losses.mel_distance`,
  lower is better).

ViSQOL and PESQ level-align and time-align the estimate first. Neither they
nor SI-SNR are defined for a silent estimate: those figures are NaN, and the
callers count them. The three perceptual metrics come from optional packages (`pip install
'soundlm[eval]'`) imported on first use.
"""
import functools
import importlib
import math
import time

import jax
import numpy as np

from soundlm.codec import losses

SAMPLE_RATE = 16_000  # ViSQOL's speech mode, wide-band PESQ and STOI all run here
METRICS = ("visqol", "pesq", "stoi", "si_snr", "mel_distance")
HIGHER_IS_BETTER = {"visqol": True, "pesq": True, "stoi": True, "si_snr": True,
                    "mel_distance": False}
PACKAGES = {"visqol": "visqol-python", "pesq": "pesq", "stoi": "pystoi"}


def check_metrics(names) -> tuple[str, ...]:
  """`names` as a tuple, refusing unknown metric names."""
  names = tuple(names)
  unknown = sorted(set(names) - set(METRICS))
  if unknown or not names:
    raise ValueError(f"metrics: {unknown or 'none given'}; choose among {', '.join(METRICS)}")
  return names


def _module(metric: str, module: str):
  try:
    return importlib.import_module(module)
  except ImportError as error:
    raise ImportError(f"the {metric} metric needs the package {PACKAGES[metric]}: pip install "
                      f"'soundlm[eval]' (or leave {metric} out of the metrics)") from error


@functools.cache
def _visqol_api():
  api = _module("visqol", "visqol").VisqolApi()
  api.create(mode="speech", use_lattice_model=False)
  return api


def _check_pair(reference: np.ndarray, estimate: np.ndarray):
  for name, wav in (("reference", reference), ("estimate", estimate)):
    if wav.ndim != 1 or wav.size == 0:
      raise ValueError(f"{name} must be a non-empty mono waveform [samples], got shape "
                       f"{wav.shape}")
    if not np.all(np.isfinite(wav)):
      raise ValueError(f"{name} contains NaN or infinite samples")
  if reference.shape != estimate.shape:
    raise ValueError(f"reference has {reference.size} samples but the estimate has "
                     f"{estimate.size}; trim both to the same length")
  if not np.any(reference):
    raise ValueError("reference is silent: no figure compares anything with silence")


def visqol(reference: np.ndarray, estimate: np.ndarray) -> float:
  """ViSQOL speech-mode MOS-LQO (1..5); NaN for a silent estimate."""
  if not np.any(estimate):
    return math.nan
  result = _visqol_api().measure_from_arrays(reference.astype(np.float64),
                                             estimate.astype(np.float64), SAMPLE_RATE)
  return float(result.moslqo)


def pesq(reference: np.ndarray, estimate: np.ndarray) -> float:
  """Wide-band PESQ MOS-LQO; NaN for a silent estimate or one PESQ cannot
  analyse (its PesqError, e.g. no utterance detected)."""
  module = _module("pesq", "pesq")
  if not np.any(estimate):
    return math.nan
  try:
    return float(module.pesq(SAMPLE_RATE, reference.astype(np.float64),
                             estimate.astype(np.float64), "wb"))
  except module.PesqError:
    return math.nan


def stoi(reference: np.ndarray, estimate: np.ndarray) -> float:
  """Short-time objective intelligibility (0..1)."""
  module = _module("stoi", "pystoi")
  return float(module.stoi(reference.astype(np.float64), estimate.astype(np.float64),
                           SAMPLE_RATE))


@jax.jit
def _si_snr(reference, estimate):
  return losses.si_snr(reference[None], estimate[None])[0]


@jax.jit
def _mel_distance(reference, estimate):
  return losses.mel_distance(reference[None], estimate[None], SAMPLE_RATE)


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
  """SI-SNR in dB; NaN for a silent estimate, which has no scale to fit."""
  if not np.any(estimate):
    return math.nan
  return float(_si_snr(reference.astype(np.float32), estimate.astype(np.float32)))


def mel_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
  return float(_mel_distance(reference.astype(np.float32), estimate.astype(np.float32)))


FUNCTIONS = {"visqol": visqol, "pesq": pesq, "stoi": stoi, "si_snr": si_snr,
             "mel_distance": mel_distance}


def score(reference, estimate, metrics=METRICS, seconds: dict | None = None
          ) -> dict[str, float]:
  """{metric: figure} of `estimate` against `reference` (mono, 16 kHz, same
  length); `seconds`, when given, accumulates each metric's time."""
  reference, estimate = np.asarray(reference), np.asarray(estimate)
  _check_pair(reference, estimate)
  figures = {}
  for name in check_metrics(metrics):
    start = time.perf_counter()
    figures[name] = FUNCTIONS[name](reference, estimate)
    if seconds is not None:
      seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
  return figures
