"""Kaldi-compatible log-mel filter banks in JAX, and waveform checks.

The computation reproduces the SeamlessM4T feature extractor that w2v-BERT 2.0
was trained with (16-bit scaled samples, 25 ms Povey windows every 10 ms, DC
removal, pre-emphasis 0.97, 512-point FFT power spectrum, 80 Kaldi-mel
filters from 20 Hz, natural log floored at float32 eps, each clip normalised
per mel bin over its own frames), so imported checkpoints see the features
they expect. The paper-style front end uses the same features.

The reference works in float64. A float32 FFT's rounding error is relative to
a frame's loudest component, so the quiet bands of clean speech (100 dB down)
would be off by up to 1e-3 after normalisation; here the frame analysis is
computed exactly from float32 pieces instead (`power_spectrum`), and the log
is taken relative to each bin's level, so the features agree with a float64
computation to about 1e-6 on any device.

Clips padded into a batch pass their `lengths` (samples): normalisation then
uses each clip's own frames only, and frames past them are zero, so a clip's
features do not depend on the batch it is in.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 400          # 25 ms
HOP = 160             # 10 ms: 100 frames per second
FFT = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07
SAMPLES_PER_TOKEN = SAMPLE_RATE // 25  # 640
STACKED_FRAMES = 2    # fbank frames per w2v-BERT 2.0 input vector (the extractor's stride)
# Zeros added on both sides before framing for tokenization: fbank frame t
# then spans samples [160 t - 120, 160 t + 280), frames 4j..4j+3 are centred
# on token j's 40 ms span, and there are N // 160 >= 4 * (N // 640) of them.
TOKEN_PAD = 120


def num_tokens(num_samples):
  """Tokens (25 Hz frames) for `num_samples` at 16 kHz: N // 640 (ints or arrays)."""
  return num_samples // SAMPLES_PER_TOKEN


def num_fbank_frames(num_samples, pad: int = 0):
  """25 ms frames every 10 ms of `num_samples` padded by `pad` on each side."""
  return 1 + (num_samples + 2 * pad - WINDOW) // HOP


def frame_mask(num_valid, num_frames: int) -> jnp.ndarray:
  """bool [B, num_frames]: True on each clip's first `num_valid` [B] frames."""
  return jnp.arange(num_frames)[None, :] < jnp.asarray(num_valid)[:, None]


def check_lengths(lengths, wav, samples_per_token: int = SAMPLES_PER_TOKEN) -> np.ndarray:
  """int32 [B] clip lengths (samples) of a padded [B, N] batch; raises
  ValueError unless each is a whole token frame or more and at most N."""
  batch, samples = np.shape(wav)
  lengths = np.asarray(lengths)
  if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
    raise ValueError(f"lengths: expected {batch} integer clip lengths (samples), got "
                     f"{lengths.dtype} array of shape {lengths.shape}")
  if lengths.min() < samples_per_token or lengths.max() > samples:
    raise ValueError(f"lengths: expected lengths in {samples_per_token}..{samples} (one "
                     f"{SAMPLE_RATE / samples_per_token:g} Hz frame up to the padded length), "
                     f"got {lengths.min()}..{lengths.max()}")
  return lengths.astype(np.int32)


def check_waveform(wav, sample_rate: int | None = None, name: str = "wav",
                   samples_per_token: int = SAMPLES_PER_TOKEN) -> None:
  """Raises ValueError unless `wav` is a float [B, N] batch of 16 kHz mono clips
  at least one token frame (`samples_per_token` samples) long."""
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
  if shape[1] < samples_per_token:
    raise ValueError(f"{name}: clips of {shape[1]} samples are shorter than one "
                     f"{SAMPLE_RATE / samples_per_token:g} Hz frame ({samples_per_token} "
                     f"samples at {SAMPLE_RATE} Hz)")


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
  return np.hanning(WINDOW) ** 0.85


# Exact frame analysis. Frames (scaled by their peak) and the float64 analysis
# matrix are cut into slices of SLICE_BITS bits, each on one grid along the
# summed axis, so a product of two slices is exact in float32 and so are sums
# of up to 2^24 / 2^13 = 2048 of them: each order i + j of the expansion
# sum_ij frame_i @ matrix_j is one float32 matmul over at most 6 pairs of 400
# terms, exact up to order 6 (order 7, some 2^-42 of the peak, may round), and
# the orders are added with error-free two-sums. 42 bits below each frame's
# peak keep components 100 dB down to float32 precision. Slices fit bfloat16,
# so accelerators that multiply in bfloat16 passes stay exact.
SLICE_BITS = 7
FRAME_SLICES = 6
MATRIX_SLICES = 6
MAX_ORDER = 7


@functools.lru_cache(maxsize=1)
def analysis_matrix() -> np.ndarray:
  """float64 [400, 2 * 257]: DC removal, pre-emphasis, Povey window and the
  512-point DFT of one frame as one linear map (real parts, then imaginary)."""
  dc_removal = np.eye(WINDOW) - 1.0 / WINDOW
  preemphasis = np.eye(WINDOW) - PREEMPHASIS * np.eye(WINDOW, k=-1)
  preemphasis[0, 0] = 1.0 - PREEMPHASIS
  angle = 2 * np.pi * np.outer(np.arange(WINDOW), np.arange(FFT // 2 + 1)) / FFT
  dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * povey_window()[:, None]
  return (preemphasis @ dc_removal).T @ dft


def _pow2(exponent):
  """Exactly 2.0 ** exponent (int32, within float32's normal range)."""
  return jax.lax.bitcast_convert_type((exponent + 127) << 23, jnp.float32)


def _cut(rest, count: int) -> list:
  """rest (|rest| <= 1, numpy or JAX) = sum of `count` slices + O(2^(-7 count)):
  slice k is a multiple of 2^(-7 k) below 2^(8 - 7 k), at most 8 significant bits."""
  pieces = []
  for k in range(1, count + 1):
    grid = float(2 ** (SLICE_BITS * k))
    piece = (rest * grid).round() / grid
    pieces.append(piece)
    rest = rest - piece
  return pieces


@functools.lru_cache(maxsize=1)
def _matrix_slices() -> tuple[tuple[np.ndarray, ...], int]:
  matrix = analysis_matrix()
  _, exponent = np.frexp(np.abs(matrix).max())
  pieces = _cut(np.ldexp(matrix, -exponent), MATRIX_SLICES)
  return tuple(p.astype(np.float32) for p in pieces), int(exponent)


def _two_sum(a, b):
  """(a + b rounded, its exact rounding error) (Knuth)."""
  total = a + b
  b_part = total - a
  return total, (a - (total - b_part)) + (b - b_part)


def power_spectrum(frames: jnp.ndarray) -> jnp.ndarray:
  """float32 frames [..., 400] (16-bit scaled samples) -> power spectrum
  [..., 257] of the DC-removed, pre-emphasised, windowed frames, as a float64
  computation gives it (rounded to float32)."""
  matrix, matrix_exponent = _matrix_slices()
  _, exponent = jnp.frexp(jnp.abs(frames).max(axis=-1, keepdims=True))
  pieces = _cut(frames * _pow2(-exponent), FRAME_SLICES)
  hi = lo = None
  for order in range(2, MAX_ORDER + 1):
    pairs = [(i, order - i) for i in range(1, order)
             if i <= FRAME_SLICES and order - i <= MATRIX_SLICES]
    term = jnp.einsum("...n,nk->...k", jnp.concatenate([pieces[i - 1] for i, _ in pairs], -1),
                      np.concatenate([matrix[j - 1] for _, j in pairs]), precision="highest")
    if hi is None:
      hi, lo = term, jnp.zeros_like(term)
    else:
      hi, error = _two_sum(hi, term)
      lo = lo + error
  spectrum = (hi + lo) * _pow2(exponent + matrix_exponent)
  real, imag = spectrum[..., :FFT // 2 + 1], spectrum[..., FFT // 2 + 1:]
  return real * real + imag * imag


def mel_energies(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0) -> jnp.ndarray:
  """[B, N] float waveform in [-1, 1] -> [B, F, num_mel_bins] Kaldi mel-filter
  energies floored at float32 eps, F = 1 + (N + 2 pad - 400) // 160."""
  x = wav.astype(jnp.float32) * 32768.0
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad)))
  frames_count = num_fbank_frames(wav.shape[1], pad)
  if frames_count < 1:
    raise ValueError(f"wav: {wav.shape[1]} samples are shorter than one {WINDOW}-sample "
                     "analysis window")
  index = HOP * np.arange(frames_count)[:, None] + np.arange(WINDOW)[None, :]
  power = power_spectrum(x[:, index])
  mel = jnp.einsum("btf,fm->btm", power, mel_filters(num_mel_bins), precision="highest")
  return jnp.maximum(mel, MEL_FLOOR)


def log_mel(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0) -> jnp.ndarray:
  """[B, N] float waveform in [-1, 1] -> [B, F, num_mel_bins] Kaldi log-mels."""
  return jnp.log(mel_energies(wav, num_mel_bins, pad))


def _clip_frames(num_frames, shape):
  """(valid bool [B, F, 1], count [B, 1, 1]) of each clip's first `num_frames`
  [B] frames of a [B, F, ...] batch (all F when None)."""
  batch, frames = shape[:2]
  num_frames = jnp.full((batch,), frames) if num_frames is None else jnp.asarray(num_frames)
  return frame_mask(num_frames, frames)[..., None], num_frames.astype(jnp.float32)[:, None, None]


def _clip_mean(values, valid, count):
  return jnp.where(valid, values, 0).sum(axis=1, keepdims=True) / count


def normalize_per_bin(features: jnp.ndarray, num_frames=None) -> jnp.ndarray:
  """Zero mean, unit (unbiased) variance per mel bin over each clip's first
  `num_frames` [B] frames (all when None); later frames become zero."""
  valid, count = _clip_frames(num_frames, features.shape)
  centred = jnp.where(valid, features - _clip_mean(features, valid, count), 0)
  var = (centred * centred).sum(axis=1, keepdims=True) / (count - 1)
  return centred / jnp.sqrt(var + 1e-7)


def normalized_log_mel(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0,
                       lengths=None) -> jnp.ndarray:
  """Log-mels normalised per clip and bin over the frames of each clip's first
  `lengths` [B] samples (all when None); later frames are zero.

  Each bin's log is taken of its energies divided by a power of two near their
  geometric mean, which leaves the normalised values as they are but keeps the
  float32 rounding of the log relative to the bin's spread, not its level."""
  mel = mel_energies(wav, num_mel_bins, pad)
  num_frames = None if lengths is None else num_fbank_frames(jnp.asarray(lengths), pad)
  level = _clip_mean(jnp.log2(mel), *_clip_frames(num_frames, mel.shape))
  relative = mel * _pow2(jnp.round(-level).astype(jnp.int32))
  return normalize_per_bin(jnp.log(relative), num_frames)


def stack_frames(features: jnp.ndarray, stride: int = STACKED_FRAMES) -> jnp.ndarray:
  """[B, F, M] -> [B, F // stride, M * stride]; a trailing partial group is dropped."""
  batch, frames, bins = features.shape
  usable = frames - frames % stride
  return features[:, :usable].reshape(batch, usable // stride, bins * stride)


def seamless_features(wav: jnp.ndarray, num_mel_bins: int = 80, pad: int = 0,
                      lengths=None) -> jnp.ndarray:
  """w2v-BERT 2.0 input features [B, F // 2, 2 * num_mel_bins] (50 Hz)."""
  return stack_frames(normalized_log_mel(wav, num_mel_bins, pad, lengths))


def token_aligned_log_mel(wav: jnp.ndarray, num_mel_bins: int = 80,
                          lengths=None) -> jnp.ndarray:
  """Normalised log-mels [B, 4 * (N // 640), M]: four 100 Hz frames per token;
  the frames of tokens past each clip's `lengths // 640` are zero."""
  features = normalized_log_mel(wav, num_mel_bins, TOKEN_PAD, lengths)
  features = features[:, :4 * num_tokens(wav.shape[1])]
  if lengths is None:
    return features
  return jnp.where(frame_mask(4 * num_tokens(jnp.asarray(lengths)), features.shape[1])[..., None],
                   features, 0)
