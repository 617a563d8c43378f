"""Speaker similarity: Resemblyzer's voice encoder (GE2E d-vectors) in JAX.

    encoder = VoiceEncoder.load()             # weights of the installed resemblyzer
    a, b = encoder.embed_utterances([wav_a, wav_b], sample_rate=16000)
    similarity = float(a @ b)                 # embeddings are L2-normalised

The model is Resemblyzer 0.1.4's `VoiceEncoder` (Apache-2.0): a 40-channel mel
power spectrogram at 16 kHz (25 ms Hann window, 10 ms hop), a 3-layer LSTM of
256 units over partial utterances of 160 frames (1.6 s, 1.3 partials per
second), a 256 x 256 linear layer, ReLU and L2 normalisation; an utterance's
embedding is the normalised mean of its partials'. Audio is first raised to
-30 dBFS if quieter, as Resemblyzer's `preprocess_wav` does; its voice-activity
trimming (webrtcvad, a C library) is not ported, so silences stay in.

The weights are read from Resemblyzer's `pretrained.pt` without PyTorch
(`read_torch_tensors`). Install the package without its dependencies (torch,
librosa, webrtcvad are not needed): `pip install --no-deps resemblyzer==0.1.4`.
"""
import collections
import functools
import importlib.util
import io
import math
import os
import pathlib
import pickle
import zipfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.io.audio import resample

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
NUM_LAYERS = 3
TARGET_DBFS = -30.0
INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4"
_INT16_MAX = 2 ** 15 - 1
_HIGHEST = jax.lax.Precision.HIGHEST

# --- torch checkpoints without torch ------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
  """A tensor as the pickle describes it; made an array once the storages are read."""

  def __init__(self, storage, offset, size, stride, *_):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

  def array(self, storages: dict) -> np.ndarray:
    data = storages[self.storage[0]]
    if self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) >= data.size \
        and math.prod(self.size):
      raise pickle.UnpicklingError(f"a tensor of shape {self.size} reaches past its storage")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], self.size, [s * data.itemsize for s in self.stride])
    return view.copy()


def _rebuild_parameter(tensor, *_):
  return tensor


class _Unpickler(pickle.Unpickler):
  """Builds only dicts, plain values and tensor references: any other class in
  the file (code a pickle could run) is refused."""

  def __init__(self, file, path):
    super().__init__(file)
    self.path, self.storages = path, {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _TensorRef
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"{self.path}: refusing {module}.{name} (only tensors, "
                                 "dicts and plain values are read)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid[0] == "storage" and len(pid) >= 5
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"{self.path}: unexpected persistent id {pid!r:.80}")
    _, kind, key, _, numel = pid[:5]
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError(f"{self.path}: storage views (torch < 1.0) are not supported")
    self.storages.setdefault(key, (kind.dtype, numel))
    return (key,)


def _resolve(obj, storages):
  if isinstance(obj, _TensorRef):
    return obj.array(storages)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, storages)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, storages) for v in obj)
  return obj


def _read_legacy(path, data: bytes):
  """torch.save's format before 1.6: pickles, then each storage as an int64
  element count and its raw little-endian bytes."""
  f = io.BytesIO(data)
  if _Unpickler(f, path).load() != _LEGACY_MAGIC:
    raise pickle.UnpicklingError(f"{path}: not a torch checkpoint (wrong magic number)")
  _Unpickler(f, path).load()  # protocol version
  sys_info = _Unpickler(f, path).load()
  if not sys_info.get("little_endian", False):
    raise pickle.UnpicklingError(f"{path}: big-endian checkpoints are not supported")
  unpickler = _Unpickler(f, path)
  obj = unpickler.load()
  storages = {}
  for key in _Unpickler(f, path).load():
    dtype, numel = unpickler.storages[key]
    count = int(np.frombuffer(f.read(8), "<i8")[0])
    if count != numel:
      raise pickle.UnpicklingError(f"{path}: storage {key} holds {count} elements, "
                                   f"the pickle says {numel}")
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
      raise pickle.UnpicklingError(f"{path}: the file ends inside storage {key}")
    storages[key] = np.frombuffer(raw, dtype.newbyteorder("<"))
  return obj, storages


def _read_zip(path, archive: zipfile.ZipFile):
  """torch.save's format since 1.6: a zip of `<name>/data.pkl` and one raw
  little-endian file `<name>/data/<key>` per storage."""
  pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pkl) != 1:
    raise pickle.UnpicklingError(f"{path}: a zip without one <name>/data.pkl")
  root = pkl[0][: -len("data.pkl")]
  byteorder = root + "byteorder"
  if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
    raise pickle.UnpicklingError(f"{path}: big-endian checkpoints are not supported")
  unpickler = _Unpickler(io.BytesIO(archive.read(pkl[0])), path)
  obj = unpickler.load()
  storages = {}
  for key, (dtype, numel) in unpickler.storages.items():
    storages[key] = np.frombuffer(archive.read(f"{root}data/{key}"),
                                  dtype.newbyteorder("<"))[:numel]
  return obj, storages


def read_torch_tensors(path) -> object:
  """What `torch.load(path)` returns, with every tensor a numpy array: for
  checkpoints of plain dicts, lists and tensors (both of torch.save's formats)."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read()
  if zipfile.is_zipfile(io.BytesIO(data)):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
      obj, storages = _read_zip(path, archive)
  else:
    obj, storages = _read_legacy(path, data)
  return _resolve(obj, storages)


# --- front end ------------------------------------------------------------------


def _hz_to_mel(hz):
  """The Slaney mel scale (librosa's default, htk=False): linear below 1 kHz."""
  hz = np.asarray(hz, np.float64)
  mel = hz * 3 / 200
  log = hz >= 1000
  return np.where(log, 15 + np.log(np.maximum(hz, 1e-10) / 1000) / (np.log(6.4) / 27), mel)


def _mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  return np.where(mel >= 15, 1000 * np.exp(np.log(6.4) / 27 * (mel - 15)), mel * 200 / 3)


@functools.cache
def mel_filters() -> np.ndarray:
  """float64 [N_MELS, N_FFT // 2 + 1]: librosa.filters.mel(sr=16000, n_fft=400,
  n_mels=40), triangles on the Slaney scale with Slaney area normalisation."""
  fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
  mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
  widths = np.diff(mel_hz)
  ramps = mel_hz[:, None] - fft_hz[None, :]
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  weights = np.maximum(0, np.minimum(lower, upper))
  return weights * (2 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
  """float32 [1 + N // HOP, N_MELS]: mel power frames of a 16 kHz waveform, as
  librosa.feature.melspectrogram gives them (centred frames, zero padding)."""
  wav = np.pad(np.asarray(wav, np.float64), N_FFT // 2)
  frames = np.lib.stride_tricks.sliding_window_view(wav, N_FFT)[::HOP]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
  power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
  return (power @ mel_filters().T).astype(np.float32)


def normalize_volume(wav: np.ndarray) -> np.ndarray:
  """Raises quieter audio to TARGET_DBFS; louder or silent audio is left as is."""
  rms = np.sqrt(np.mean((wav.astype(np.float64) * _INT16_MAX) ** 2))
  if rms == 0:
    return wav
  change_db = TARGET_DBFS - 20 * np.log10(rms / _INT16_MAX)
  return wav if change_db < 0 else (wav * 10 ** (change_db / 20)).astype(np.float32)


def partial_starts(num_samples: int) -> list[int]:
  """First mel frame of each partial utterance (Resemblyzer's
  `compute_partial_slices` at 1.3 partials per second, 0.75 minimum coverage):
  partials cover the whole utterance, and a last one under 75 % covered by
  audio is dropped unless it is the only one."""
  num_frames = math.ceil((num_samples + 1) / HOP)
  step = round(SAMPLE_RATE / PARTIALS_PER_SECOND / HOP)
  starts = list(range(0, max(1, num_frames - PARTIAL_FRAMES + step + 1), step))
  coverage = (num_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
  if coverage < MIN_COVERAGE and len(starts) > 1:
    starts.pop()
  return starts


def _check_waveform(wav, sample_rate: int, index: int) -> np.ndarray:
  wav = np.asarray(wav)
  if wav.ndim != 1 or wav.size == 0 or not np.issubdtype(wav.dtype, np.floating):
    raise ValueError(f"waveform {index}: expected a non-empty 1-D float array, got "
                     f"{wav.dtype} of shape {wav.shape}")
  if not np.isfinite(wav).all():
    raise ValueError(f"waveform {index} has NaN or infinite samples")
  return resample(wav.astype(np.float32), sample_rate, SAMPLE_RATE)


def utterance_partials(wav: np.ndarray) -> np.ndarray:
  """float32 [P, PARTIAL_FRAMES, N_MELS]: the mel frames of each partial of a
  16 kHz waveform, zero-padded at the end as far as the last partial reaches."""
  wav = normalize_volume(wav)
  starts = partial_starts(wav.size)
  end = (starts[-1] + PARTIAL_FRAMES) * HOP
  if end >= wav.size:
    wav = np.pad(wav, (0, end - wav.size))
  mel = mel_spectrogram(wav)
  return np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])


# --- the encoder ------------------------------------------------------------------


def _lstm_layer(x, w_ih, w_hh, bias):
  """PyTorch's LSTM (gates i, f, g, o) over [T, B, D] -> outputs [T, B, H]."""
  inputs = jnp.einsum("tbd,gd->tbg", x, w_ih, precision=_HIGHEST) + bias

  def step(carry, gates_in):
    h, c = carry
    gates = gates_in + jnp.dot(h, w_hh.T, precision=_HIGHEST)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  zeros = jnp.zeros((x.shape[1], w_hh.shape[1]), x.dtype)
  _, outputs = jax.lax.scan(step, (zeros, zeros), inputs)
  return outputs


@jax.jit
def embed_partials(params: dict, mels: jax.Array) -> jax.Array:
  """float32 [B, PARTIAL_FRAMES, N_MELS] -> L2-normalised [B, 256]."""
  x = jnp.swapaxes(mels, 0, 1)
  for layer in params["lstm"]:
    x = _lstm_layer(x, *layer)
  embedding = jax.nn.relu(jnp.dot(x[-1], params["linear"][0].T, precision=_HIGHEST)
                          + params["linear"][1])
  return embedding / jnp.linalg.norm(embedding, axis=-1, keepdims=True)


def default_weights_path() -> pathlib.Path:
  """`pretrained.pt` of the installed resemblyzer package (found, not imported:
  importing it would import torch)."""
  spec = importlib.util.find_spec("resemblyzer")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the speaker encoder's weights come from the resemblyzer package, "
                            f"which is not installed: {INSTALL_HINT} (17 MB, no torch needed)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
  if not path.is_file():
    raise FileNotFoundError(f"the resemblyzer package has no {path}; reinstall it: "
                            f"{INSTALL_HINT}")
  return path


class VoiceEncoder:
  """Resemblyzer's voice encoder with its weights as jax arrays."""

  def __init__(self, params: dict, batch_size: int = 32):
    """`batch_size` partials go through the LSTM at a time (one compiled shape)."""
    self.params, self.batch_size = params, batch_size

  @classmethod
  def load(cls, path=None, **kwargs) -> "VoiceEncoder":
    """The weights of `path` (Resemblyzer's checkpoint format) or of the installed package."""
    path = pathlib.Path(path) if path is not None else default_weights_path()
    if not path.is_file():
      raise FileNotFoundError(f"speaker encoder weights {path} do not exist")
    checkpoint = read_torch_tensors(path)
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
      raise ValueError(f"{path}: expected a checkpoint dict with 'model_state'")
    hidden = 4 * 256
    shapes = {"linear.weight": (256, 256), "linear.bias": (256,)}
    for layer in range(NUM_LAYERS):
      shapes |= {f"lstm.weight_ih_l{layer}": (hidden, N_MELS if layer == 0 else 256),
                 f"lstm.weight_hh_l{layer}": (hidden, 256),
                 f"lstm.bias_ih_l{layer}": (hidden,), f"lstm.bias_hh_l{layer}": (hidden,)}
    for name, shape in shapes.items():
      got = getattr(state.get(name), "shape", None)
      if got != shape:
        raise ValueError(f"{path}: model_state[{name!r}] should have shape {shape}, got {got}")
    f32 = {name: jnp.asarray(state[name], jnp.float32) for name in shapes}
    lstm = tuple((f32[f"lstm.weight_ih_l{i}"], f32[f"lstm.weight_hh_l{i}"],
                  f32[f"lstm.bias_ih_l{i}"] + f32[f"lstm.bias_hh_l{i}"])
                 for i in range(NUM_LAYERS))
    return cls({"lstm": lstm, "linear": (f32["linear.weight"], f32["linear.bias"])}, **kwargs)

  def embed_partials(self, mels: np.ndarray) -> np.ndarray:
    """float32 [P, PARTIAL_FRAMES, N_MELS] -> [P, 256], `batch_size` at a time."""
    out = []
    for start in range(0, len(mels), self.batch_size):
      chunk = mels[start:start + self.batch_size]
      padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(embed_partials(self.params, padded))[:len(chunk)])
    return np.concatenate(out)

  def embed_utterances(self, wavs: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE
                       ) -> np.ndarray:
    """float32 [N, 256]: one L2-normalised embedding per waveform (resampled to
    16 kHz if `sample_rate` differs); the partials of all of them share batches."""
    partials = [utterance_partials(_check_waveform(w, sample_rate, i))
                for i, w in enumerate(wavs)]
    if not partials:
      raise ValueError("no waveforms to embed")
    embedded = self.embed_partials(np.concatenate(partials))
    bounds = np.cumsum([0] + [len(p) for p in partials])
    means = np.stack([embedded[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    return means / np.linalg.norm(means, axis=-1, keepdims=True)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity of two [N, D] arrays."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
