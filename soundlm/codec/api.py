"""The codec as other code uses it: waveforms to acoustic tokens and back.

    codec = Codec.random('tiny')              # or Codec.load(workdir)
    codes = codec.encode(wav)                 # float32 [B, N] -> int32 [B, T, Q]
    wav = codec.decode(codes)                 # int32 [B, T, Q'] -> float32 [B, T * hop]

`encode` right-pads N with zeros to a whole number of frames (T = ceil(N /
hop_length)); audio shorter than one frame is refused. Both run jitted and
batched; a new input shape compiles once. `encoder_stream()` and
`decoder_stream()` take chunks and return what one full call returns (the same
sums, equal to float round-off); a model whose start padding mirrors its
first samples (EnCodec) holds the first `stream_warmup_frames` frames back.

`Codec.from_hf(folder, bandwidth=6.0)` runs a Hugging Face EnCodec checkpoint
(`soundlm.codec.encodec`) behind the same interface, and `Codec.from_hf(folder,
num_levels=8)` a Mimi one (`soundlm.codec.mimi`; it runs whole clips only:
its streams are refused).
"""
import functools
from typing import Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from soundlm import models
from soundlm import partitioning
from soundlm.codec import hf_encodec, hf_mimi
from soundlm.codec.encodec import EncodecModel
from soundlm.codec.listening import ListeningCodec
from soundlm.codec.mimi import MimiModel
from soundlm.codec.model import SoundStream, SoundStreamConfig
from soundlm.layers.conv import zero_stream_state
from soundlm.layers.rvq import COLLECTION

# Every codec variable replicated; batches split over the data axes.
_REPLICATED = partitioning.DATA_PARALLEL_RULES


class Codec:
  """A SoundStream (or imported EnCodec or Mimi) model with its variables ('params' and
  the 'quantizer' codebooks).

  The codec is small: its variables are replicated over the partitioner's mesh
  and every batch is split over the mesh's data axes.
  """

  def __init__(self, model: SoundStream | EncodecModel | MimiModel, variables: dict,
               partitioner: partitioning.Partitioner | None = None):
    self.model = model
    self.partitioner = partitioner or partitioning.Partitioner()
    self.variables = self.partitioner.replicate(
        {"params": variables["params"], COLLECTION: variables[COLLECTION]})
    self._encode = jax.jit(self._encode_fn, static_argnums=2)
    self._decode = jax.jit(
        lambda variables, codes: model.apply(variables, codes, method="decode"))

  # --- construction ---------------------------------------------------------

  @classmethod
  def of(cls, model: models.Model) -> "Codec":
    return cls(model.module, model.variables, model.partitioner)

  @classmethod
  def random(cls, config: str | SoundStreamConfig = "tiny", seed: int = 0, *,
             mesh=None) -> "Codec":
    """Randomly initialised weights for a named size ('tiny', 'paper_16khz',
    'paper_24khz'), a gin file or a config."""
    if not isinstance(config, SoundStreamConfig):
      config = models.config_from_gin(SoundStreamConfig, "codec", config)
    return cls.of(models.random(config, seed, mesh=mesh, rules=_REPLICATED))

  @classmethod
  def load(cls, workdir: str, step: Optional[int] = None, *, mesh=None) -> "Codec":
    """The generator of a codec training run (latest or given checkpoint)."""
    return cls.of(models.load(workdir, step, family="soundstream", mesh=mesh,
                              rules=_REPLICATED))

  @classmethod
  def from_hf(cls, path: str, *, num_levels: Optional[int] = None,
              bandwidth: Optional[float] = None, mesh=None) -> "Codec":
    """A Hugging Face EnCodec or Mimi folder (config.json + model.safetensors,
    picked by its model_type) with its first `num_levels` levels (default: all)
    or, for EnCodec, the levels of `bandwidth` kbps (e.g. 6.0: 8 levels of
    encodec_24khz)."""
    _, hf = hf_encodec.read_hf_config(path, "EncodecModel or MimiModel")
    model_type = hf.get("model_type")
    if model_type == "mimi":
      if bandwidth is not None:
        raise ValueError(f"{path}: a Mimi checkpoint has no target bandwidths; give "
                         f"num_levels instead of bandwidth={bandwidth}")
      config, variables = hf_mimi.load_hf_mimi(path, num_levels=num_levels)
      model = MimiModel(config)
    elif model_type == "encodec":
      config, variables = hf_encodec.load_hf_encodec(path, num_levels=num_levels,
                                                     bandwidth=bandwidth)
      model = EncodecModel(config)
    else:
      raise ValueError(f"{path}: model_type {model_type!r} is not a codec soundlm imports "
                       "('encodec' or 'mimi')")
    return cls(model, variables, partitioning.Partitioner.of(mesh, _REPLICATED))

  @classmethod
  def from_spec(cls, spec: str, *, mesh=None) -> "Codec":
    """The codec a command line or gin file names: 'hf:DIR' (a Hugging Face
    EnCodec or Mimi folder, every level), 'hf:DIR,KBPS' (EnCodec: the levels of
    that bandwidth) or 'hf:DIR,levels=N' (the first N levels), a codec
    training work dir, or a size name (random weights)."""
    if spec.startswith("hf:"):
      folder, _, option = spec[3:].partition(",")
      levels = option.startswith("levels=")
      try:
        number = (int(option[len("levels="):]) if levels else float(option)) if option else None
      except ValueError as error:
        raise ValueError(f"codec {spec!r}: {option!r} is not a bandwidth in kbps or "
                         "levels=N (expected hf:DIR, hf:DIR,KBPS or hf:DIR,levels=N, e.g. "
                         "hf:encodec_24khz,6.0 or hf:mimi,levels=8)") from error
      if levels:
        return cls.from_hf(folder, num_levels=number, mesh=mesh)
      return cls.from_hf(folder, bandwidth=number, mesh=mesh)
    if epath.Path(spec).is_dir():
      return cls.load(spec, mesh=mesh)
    return cls.random(spec, mesh=mesh)

  # --- description ----------------------------------------------------------

  @property
  def sample_rate(self) -> int:
    return self.model.sample_rate

  @property
  def hop_length(self) -> int:
    return self.model.hop_length

  @property
  def frame_rate(self) -> float:
    return self.model.frame_rate

  @property
  def num_levels(self) -> int:
    return self.model.num_levels

  @property
  def codebook_size(self) -> int:
    return self.model.codebook_size

  # --- checks -----------------------------------------------------------------

  def check_waveform(self, wav, sample_rate: Optional[int] = None):
    """Raises ValueError unless `wav` is finite mono float audio [B, N], N >= hop_length."""
    if sample_rate is not None and sample_rate != self.sample_rate:
      raise ValueError(f"sample_rate is {sample_rate} Hz but the codec expects "
                       f"{self.sample_rate} Hz; resample first")
    wav = jnp.asarray(wav)
    if wav.ndim == 3:
      raise ValueError(f"wav has {wav.shape[-1]} channels (shape {wav.shape}); the codec "
                       "takes mono [batch, samples]")
    if wav.ndim != 2:
      raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
    if not jnp.issubdtype(wav.dtype, jnp.floating):
      raise ValueError(f"wav must be floating point, got {wav.dtype}")
    if wav.shape[0] == 0 or wav.shape[1] == 0:
      raise ValueError(f"wav is empty (shape {wav.shape})")
    if wav.shape[1] < self.hop_length:
      raise ValueError(f"wav has {wav.shape[1]} samples, fewer than one frame "
                       f"({self.hop_length} samples)")
    if not bool(jnp.all(jnp.isfinite(wav))):
      raise ValueError("wav contains NaN or infinite samples")
    return wav.astype(jnp.float32)

  def check_codes(self, codes):
    """Raises ValueError unless `codes` is int [B, T, 1..Q] with values in [0, K)."""
    codes = jnp.asarray(codes)
    if codes.ndim != 3:
      raise ValueError(f"codes must be [batch, frames, levels], got shape {codes.shape}")
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(f"codes must be integers, got {codes.dtype}")
    if not 1 <= codes.shape[2] <= self.num_levels:
      raise ValueError(f"codes have {codes.shape[2]} levels; the codec has "
                       f"{self.num_levels} (1..{self.num_levels} allowed)")
    if codes.shape[0] == 0 or codes.shape[1] == 0:
      raise ValueError(f"codes are empty (shape {codes.shape})")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= self.codebook_size:
      raise ValueError(f"codes must lie in [0, {self.codebook_size}), got values in "
                       f"[{low}, {high}]")
    return codes.astype(jnp.int32)

  def _check_levels(self, num_levels: Optional[int]) -> int:
    if num_levels is None:
      return self.num_levels
    if not isinstance(num_levels, (int, np.integer)) or not (
        1 <= num_levels <= self.num_levels):
      raise ValueError(f"num_levels must be an integer in [1, {self.num_levels}], "
                       f"got {num_levels!r}")
    return int(num_levels)

  # --- full calls -------------------------------------------------------------

  def _encode_fn(self, variables, wav, num_levels):
    pad = -wav.shape[1] % self.hop_length
    wav = jnp.pad(wav, ((0, 0), (0, pad)))
    return self.model.apply(variables, wav, num_levels=num_levels, method="encode")

  def encode(self, wav, num_levels: Optional[int] = None, *,
             sample_rate: Optional[int] = None) -> jax.Array:
    """float32 [B, N] -> int32 [B, ceil(N / hop_length), num_levels or Q]."""
    num_levels = self._check_levels(num_levels)
    wav, valid = self.partitioner.place_batch(self.check_waveform(wav, sample_rate))
    return self._encode(self.variables, wav, num_levels)[valid]

  def decode(self, codes) -> jax.Array:
    """int32 [B, T, Q'] (Q' <= Q) -> float32 [B, T * hop_length]."""
    codes, valid = self.partitioner.place_batch(self.check_codes(codes))
    return self._decode(self.variables, codes)[valid]

  # --- streaming --------------------------------------------------------------

  def _check_streams(self):
    if not self.model.streams:
      raise ValueError(f"{type(self.model).__name__} runs whole clips only (no chunked "
                       "streams); use encode and decode")

  def encoder_stream(self, num_levels: Optional[int] = None) -> "EncoderStream":
    self._check_streams()
    return EncoderStream(self, self._check_levels(num_levels))

  def decoder_stream(self) -> "DecoderStream":
    self._check_streams()
    return DecoderStream(self)


@gin.configurable(module="soundlm.codec")
def listening_codec(spec: str = gin.REQUIRED) -> ListeningCodec:
  """The codec of `spec` (as `Codec.from_spec`) for a token model's audible
  evaluation: `SoundStormTask.codec = @soundlm.codec.listening_codec()` with
  `soundlm.codec.listening_codec.spec = '/runs/codec'`."""
  codec = Codec.from_spec(spec)
  return ListeningCodec(codec.model, codec.variables, spec)


@functools.partial(jax.jit, static_argnames=("model", "method", "kwargs"))
def _stream_step(variables, cache, x, *, model, method, kwargs=()):
  return model.apply({**variables, "cache": cache}, x, stream=True, method=method,
                     mutable=["cache"], **dict(kwargs))


class EncoderStream:
  """Waveform chunks of any length in, codes of the frames they complete out.

  `push` keeps samples that do not yet fill a frame; `flush` zero-pads them to
  a frame, as `Codec.encode` pads the end. The concatenated outputs equal
  `codec.encode(whole waveform)`.
  """

  def __init__(self, codec: Codec, num_levels: int):
    self.codec, self.num_levels = codec, num_levels
    self._pending = None
    self._cache = None

  def _run(self, wav):
    kwargs = (("num_levels", self.num_levels),)
    if self._cache is None:
      self._cache = zero_stream_state(self.codec.model, self.codec.variables,
                                      wav[:, :self.codec.hop_length], method="encode",
                                      **dict(kwargs))
    codes, updates = _stream_step(self.codec.variables, self._cache, wav,
                                  model=self.codec.model, method="encode", kwargs=kwargs)
    self._cache = updates["cache"]
    return codes

  def push(self, chunk) -> jax.Array:
    """float32 [B, n] -> int32 [B, frames completed, num_levels] (possibly 0 frames;
    none before the model's `stream_warmup_frames` have arrived)."""
    chunk = jnp.asarray(chunk)
    if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] == 0:
      raise ValueError(f"chunk must be a non-empty [batch, samples], got shape {chunk.shape}")
    if not jnp.issubdtype(chunk.dtype, jnp.floating):
      raise ValueError(f"chunk must be floating point, got {chunk.dtype}")
    if not bool(jnp.all(jnp.isfinite(chunk))):
      raise ValueError("chunk contains NaN or infinite samples")
    chunk = chunk.astype(jnp.float32)
    if self._pending is not None:
      if chunk.shape[0] != self._pending.shape[0]:
        raise ValueError(f"chunk batch {chunk.shape[0]} differs from the stream's "
                         f"{self._pending.shape[0]}")
      chunk = jnp.concatenate([self._pending, chunk], axis=1)
    frames = chunk.shape[1] // self.codec.hop_length
    if self._cache is None and frames < self.codec.model.stream_warmup_frames:
      frames = 0
    whole = frames * self.codec.hop_length
    self._pending = chunk[:, whole:]
    if whole == 0:
      return jnp.zeros((chunk.shape[0], 0, self.num_levels), jnp.int32)
    return self._run(chunk[:, :whole])

  def flush(self) -> jax.Array:
    """Codes of the samples held back, the last partial frame zero-padded (0
    frames if there are none)."""
    pending, self._pending = self._pending, None
    if pending is None or pending.shape[1] == 0:
      batch = 0 if pending is None else pending.shape[0]
      return jnp.zeros((batch, 0, self.num_levels), jnp.int32)
    pad = -pending.shape[1] % self.codec.hop_length
    return self._run(jnp.pad(pending, ((0, 0), (0, pad))))


class DecoderStream:
  """Code chunks [B, t, Q'] in, their t * hop_length samples out, equal to a full
  decode. The model's first `stream_warmup_frames` frames are held back until
  they have all arrived (or `flush`)."""

  def __init__(self, codec: Codec):
    self.codec = codec
    self._cache = None
    self._pending = None
    self._batch = None

  def push(self, codes) -> jax.Array:
    codes = self.codec.check_codes(codes)
    if self._pending is not None:
      if codes.shape[0] != self._pending.shape[0] or codes.shape[2] != self._pending.shape[2]:
        raise ValueError(f"codes shape {codes.shape} does not continue the stream's "
                         f"{self._pending.shape}")
      codes = jnp.concatenate([self._pending, codes], axis=1)
      self._pending = None
    if self._cache is None and codes.shape[1] < self.codec.model.stream_warmup_frames:
      self._pending = codes
      return jnp.zeros((codes.shape[0], 0), jnp.float32)
    return self._run(codes)

  def flush(self) -> jax.Array:
    """The samples of codes held back (a stream shorter than the warm-up), else none."""
    pending, self._pending = self._pending, None
    if pending is None:
      return jnp.zeros((0, 0), jnp.float32)
    return self._run(pending)

  def _run(self, codes):
    if self._cache is None:
      self._cache = zero_stream_state(self.codec.model, self.codec.variables,
                                      codes[:, :1], method="decode")
      self._batch = codes.shape[0]
    elif self._batch != codes.shape[0]:
      raise ValueError(f"codes batch {codes.shape[0]} differs from the stream's "
                       f"{self._batch}")
    wav, updates = _stream_step(self.codec.variables, self._cache, codes,
                                model=self.codec.model, method="decode")
    self._cache = updates["cache"]
    return wav
