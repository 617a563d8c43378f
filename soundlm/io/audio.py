"""Reading audio files into float32 mono numpy arrays, with clear errors, and
writing waveforms as 16-bit WAV files.

Numpy/soundfile only (no TensorFlow), so the corpus loader, the generation
jobs and the tests of other areas can read and write audio anywhere; paths
may be URIs such as gs://bucket/clip.wav (read and written through
etils.epath, a whole object at a time).
Resampling and down-mixing happen only when the caller asks for them;
otherwise a mismatch is an error."""
import functools
import io
import math
import os
import re

import numpy as np
from etils import epath

from soundlm.io import paths

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class AudioFileError(ValueError):
  """An audio file that cannot be used as it is; the message names the file."""

  def __init__(self, path, problem: str):
    super().__init__(f"{os.fspath(path)}: {problem}")
    self.path = os.fspath(path)
    self.problem = problem


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
  """Polyphase resampling along the last axis (scipy ships with jax)."""
  if orig_rate == new_rate:
    return wav
  from scipy import signal

  g = math.gcd(int(orig_rate), int(new_rate))
  out = signal.resample_poly(wav, new_rate // g, orig_rate // g, axis=-1)
  return out.astype(np.float32)


def read_audio(path, sample_rate: int | None = None, *, allow_resample: bool = False,
               allow_downmix: bool = False) -> tuple[np.ndarray, int]:
  """Returns (float32 [N] waveform, sample rate).

  Raises AudioFileError for unreadable, empty, truncated or non-finite
  audio, for more than one channel unless `allow_downmix`, and for a rate
  other than `sample_rate` unless `allow_resample`.
  """
  import soundfile as sf

  data = epath.Path(path).read_bytes() if paths.in_object_store(path) else None

  def source():
    return os.fspath(path) if data is None else io.BytesIO(data)

  try:
    info = sf.info(source())
  except Exception as e:  # libsndfile raises several types for bad files
    raise AudioFileError(path, f"unreadable audio file ({type(e).__name__}: {e})") from e
  declared = re.search(r"^data : (\d+) \(should be (\d+)\)", info.extra_info, re.MULTILINE)
  if declared:  # a WAV whose data chunk is shorter than its header says
    raise AudioFileError(path, f"truncated audio file: header declares {declared[1]} bytes "
                               f"of audio data, the file holds {declared[2]}")
  try:
    wav, rate = sf.read(source(), dtype="float32", always_2d=True)
  except Exception as e:
    raise AudioFileError(path, f"corrupt or truncated audio data ({type(e).__name__}: {e})"
                         ) from e
  if wav.shape[0] == 0:
    raise AudioFileError(path, "empty audio file (0 samples)")
  if 0 < info.frames != wav.shape[0]:
    raise AudioFileError(path, f"truncated audio file: header says {info.frames} samples, "
                               f"only {wav.shape[0]} could be read")
  if not np.all(np.isfinite(wav)):
    raise AudioFileError(path, "audio contains NaN or infinite samples")
  if wav.shape[1] != 1:
    if not allow_downmix:
      raise AudioFileError(path, f"expected 1 channel (mono), found {wav.shape[1]}; "
                                 "set allow_downmix=True to average the channels")
    wav = wav.mean(axis=1, keepdims=True)
  wav = wav[:, 0]
  if sample_rate is not None and rate != sample_rate:
    if not allow_resample:
      raise AudioFileError(path, f"sample rate {rate} Hz, expected {sample_rate} Hz; "
                                 "set allow_resample=True to resample")
    wav, rate = resample(wav, rate, sample_rate), sample_rate
  return wav, int(rate)


def list_audio_files(root) -> list[str]:
  """All audio files under `root`, sorted by relative path (deterministic order)."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f"root: {root!r} is not a directory")
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in filenames:
      if name.lower().endswith(AUDIO_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(found)


def write_wav(path, wav: np.ndarray, sample_rate: int):
  """Writes float samples in [-1, 1] as 16-bit PCM WAV, atomically: a crash never
  leaves a half-written file under the final name (decode jobs resume by it)."""
  import soundfile as sf

  path = os.fspath(path)
  if paths.in_object_store(path):  # an object store writes a whole object or none
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wav, np.float32), sample_rate, subtype="PCM_16",
             format="WAV")
    epath.Path(path).write_bytes(buffer.getvalue())
    return
  tmp = path + ".tmp.wav"
  sf.write(tmp, np.asarray(wav, np.float32), sample_rate, subtype="PCM_16")
  os.replace(tmp, path)


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
