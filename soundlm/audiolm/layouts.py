"""Token layouts of AudioLM's three stages: tokens -> model sequence -> tokens.

Each stage is a decoder-only LM over one flat id space in which every kind of
token has its own id range, so a sampler can tell from the position alone
which ids are allowed there:

  0                          PAD: padding, never a target, never sampled
  1                          START: opens stage 1; separates conditioning
                             from targets in stages 2 and 3
  2 + s                      semantic token s (0 <= s < K_s; stages 1, 2)
  base + l * N + c           code c of RVQ level l (0-based, 0 <= l < Q);
                             base = 2 + K_s in stage 2, 2 in stage 3

With S semantic frames (25 Hz) and T = r * S acoustic frames (50 Hz, r = 2),
Q levels of N codes of which the first Q' are "coarse":

  stage 1 semantic: [START, s_1 .. s_S]
  stage 2 coarse:   [s_1 .. s_S, START, a(1,1) .. a(1,Q'), a(2,1) .. a(T,Q')]
  stage 3 fine:     [a(1,1) .. a(T,Q'), START, a(1,Q'+1) .. a(1,Q), .. a(T,Q)]

i.e. acoustic codes are flattened frame by frame (all levels of frame 1, then
frame 2, ...). The loss and the sampler only touch the stage's targets: the
tokens after START.

Public functions (`semantic_sequence`, `coarse_sequence`, `fine_sequence` and
their inverses `semantic_from_sequence`, `coarse_from_sequence`,
`fine_from_sequence`) take numpy or jax.numpy integer arrays with any leading
batch dimensions and return the same kind of array, so they serve both the
tf.data pipeline (numpy through `tf.numpy_function`) and jitted code. Ids are
range-checked whenever the values are concrete (not under `jit`).

`Layout` bundles one stage's settings (vocabulary sizes, levels, crop length,
frame rates) and answers the questions the model, the loss and the sampler
ask: vocabulary size, sequence lengths, and the range of ids valid for each
target position.
"""
import dataclasses
from typing import Optional

import gin
import jax
import numpy as np

PAD_ID = 0
START_ID = 1
NUM_SPECIAL = 2
STAGES = ("semantic", "coarse", "fine")
# Training crops of the paper: 30 s (stage 1), 10 s (stage 2), 3 s (stage 3).
PAPER_CROP_SECONDS = {"semantic": 30.0, "coarse": 10.0, "fine": 3.0}
VOCAB_MULTIPLE = 128  # embedding rows padded so the vocab axis shards evenly


def _xp(x):
  """The array module of `x`: jax.numpy for jax arrays and tracers, else numpy."""
  if isinstance(x, jax.Array):
    import jax.numpy as jnp
    return jnp
  return np


def _as_array(x, name):
  xp = _xp(x)
  x = xp.asarray(x)
  if not xp.issubdtype(x.dtype, xp.integer):
    raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")
  return x


def _is_concrete(x):
  return not isinstance(x, jax.core.Tracer)


def _check_range(x, low, high, name):
  """Raises unless low <= x < high everywhere (skipped for traced values)."""
  if _is_concrete(x) and np.size(x):
    values = np.asarray(x)
    if values.min() < low or values.max() >= high:
      bad = values[(values < low) | (values >= high)].ravel()[0]
      raise ValueError(f"{name} must lie in [{low}, {high}), found {bad}")


def _start_column(like, n_lead):
  xp = _xp(like)
  return xp.full(like.shape[:n_lead] + (1,), START_ID, dtype=like.dtype)


def semantic_ids(semantic, semantic_vocab: int):
  """Semantic tokens [..., S] -> their ids [..., S] (2 + s)."""
  semantic = _as_array(semantic, "semantic")
  _check_range(semantic, 0, semantic_vocab, "semantic")
  return semantic.astype(np.int32) + NUM_SPECIAL


def semantic_from_ids(ids, semantic_vocab: int, name: str = "ids"):
  """Inverse of `semantic_ids`."""
  semantic = _as_array(ids, name) - NUM_SPECIAL
  _check_range(semantic, 0, semantic_vocab, f"{name} (semantic ids)")
  return semantic.astype(np.int32)


def acoustic_ids(codes, base: int, codebook_size: int, name: str = "codes"):
  """Codes [..., T, L] -> ids [..., T * L], frame by frame; level l of the
  array gets ids base + l * N + c."""
  codes = _as_array(codes, name)
  if codes.ndim < 2:
    raise ValueError(f"{name} must be [..., frames, levels], got shape {codes.shape}")
  xp = _xp(codes)
  _check_range(codes, 0, codebook_size, name)
  codes = codes.astype(np.int32)
  levels = xp.arange(codes.shape[-1], dtype=np.int32)
  ids = codes + base + levels * codebook_size
  return ids.reshape(codes.shape[:-2] + (-1,))


def codes_from_ids(ids, num_levels: int, base: int, codebook_size: int,
                   name: str = "ids"):
  """Inverse of `acoustic_ids`: ids [..., T * L] -> codes [..., T, L]."""
  ids = _as_array(ids, name)
  xp = _xp(ids)
  if ids.shape[-1] % num_levels:
    raise ValueError(f"{name}: {ids.shape[-1]} acoustic ids are not a whole number "
                     f"of frames of {num_levels} levels")
  codes = ids.reshape(ids.shape[:-1] + (-1, num_levels))
  codes = codes - base - xp.arange(num_levels, dtype=ids.dtype) * codebook_size
  _check_range(codes, 0, codebook_size,
               f"{name} (codes after removing each level's offset)")
  return codes.astype(np.int32)


def _check_start(sequence, position, name):
  if _is_concrete(sequence) and np.size(sequence):
    found = np.asarray(sequence)[..., position]
    if np.any(found != START_ID):
      raise ValueError(f"{name}: expected START id {START_ID} at position {position}, "
                       f"found {found.ravel()[found.ravel() != START_ID][0]}")


def semantic_sequence(semantic, semantic_vocab: int):
  """Stage 1: semantic tokens [..., S] -> [..., 1 + S] = [START, 2 + s ...]."""
  ids = semantic_ids(semantic, semantic_vocab)
  return _xp(ids).concatenate([_start_column(ids, ids.ndim - 1), ids], axis=-1)


def semantic_from_sequence(sequence, semantic_vocab: int):
  """Inverse of `semantic_sequence`: [..., 1 + S] -> semantic tokens [..., S]."""
  sequence = _as_array(sequence, "sequence")
  _check_start(sequence, 0, "sequence")
  return semantic_from_ids(sequence[..., 1:], semantic_vocab, "sequence")


def _check_aligned(num_semantic, num_frames, frames_per_semantic):
  if num_frames != num_semantic * frames_per_semantic:
    raise ValueError(
        f"codes have {num_frames} frames but {num_semantic} semantic tokens at "
        f"{frames_per_semantic} acoustic frames per semantic token need "
        f"{num_semantic * frames_per_semantic}")


def with_start(conditioning, targets):
  """[conditioning ids, START, target ids] on the last axis."""
  xp = _xp(targets)
  return xp.concatenate([conditioning, _start_column(targets, targets.ndim - 1), targets],
                        axis=-1)


def coarse_sequence(semantic, codes, num_coarse_levels: int, codebook_size: int,
                    semantic_vocab: int, frames_per_semantic: int = 2):
  """Stage 2: semantic [..., S] and codes [..., T, >=Q'] -> [..., S + 1 + T * Q'].

  Only the first `num_coarse_levels` levels of `codes` are used; T must equal
  S * frames_per_semantic.
  """
  semantic = _as_array(semantic, "semantic")
  codes = _as_array(codes, "codes")
  if codes.ndim < 2 or codes.shape[-1] < num_coarse_levels:
    raise ValueError(f"codes must be [..., frames, levels>={num_coarse_levels}], "
                     f"got shape {codes.shape}")
  _check_aligned(semantic.shape[-1], codes.shape[-2], frames_per_semantic)
  return with_start(semantic_ids(semantic, semantic_vocab),
                    acoustic_ids(codes[..., :num_coarse_levels],
                                 NUM_SPECIAL + semantic_vocab, codebook_size))


def coarse_from_sequence(sequence, num_coarse_levels: int, codebook_size: int,
                         semantic_vocab: int, frames_per_semantic: int = 2):
  """Inverse of `coarse_sequence`: -> (semantic [..., S], codes [..., T, Q'])."""
  sequence = _as_array(sequence, "sequence")
  per_semantic = 1 + frames_per_semantic * num_coarse_levels
  if (sequence.shape[-1] - 1) % per_semantic:
    raise ValueError(f"sequence length {sequence.shape[-1]} is not S + 1 + "
                     f"{frames_per_semantic} * S * {num_coarse_levels} for any S")
  num_semantic = (sequence.shape[-1] - 1) // per_semantic
  _check_start(sequence, num_semantic, "sequence")
  semantic = semantic_from_ids(sequence[..., :num_semantic], semantic_vocab, "sequence")
  codes = codes_from_ids(sequence[..., num_semantic + 1:], num_coarse_levels,
                         NUM_SPECIAL + semantic_vocab, codebook_size, "sequence")
  return semantic, codes


def fine_sequence(codes, num_coarse_levels: int, codebook_size: int):
  """Stage 3: codes [..., T, Q] -> [..., T * Q' + 1 + T * (Q - Q')]."""
  codes = _as_array(codes, "codes")
  if codes.ndim < 2 or not 0 < num_coarse_levels < codes.shape[-1]:
    raise ValueError(f"codes must be [..., frames, levels>{num_coarse_levels}], "
                     f"got shape {codes.shape}")
  return with_start(
      acoustic_ids(codes[..., :num_coarse_levels], NUM_SPECIAL, codebook_size),
      acoustic_ids(codes[..., num_coarse_levels:],
                   NUM_SPECIAL + num_coarse_levels * codebook_size, codebook_size))


def fine_from_sequence(sequence, num_levels: int, num_coarse_levels: int,
                       codebook_size: int):
  """Inverse of `fine_sequence`: -> codes [..., T, Q] (coarse and fine levels)."""
  sequence = _as_array(sequence, "sequence")
  if (sequence.shape[-1] - 1) % num_levels:
    raise ValueError(f"sequence length {sequence.shape[-1]} is not T * {num_levels}"
                     " + 1 for any T")
  num_frames = (sequence.shape[-1] - 1) // num_levels
  split = num_frames * num_coarse_levels
  _check_start(sequence, split, "sequence")
  coarse = codes_from_ids(sequence[..., :split], num_coarse_levels, NUM_SPECIAL,
                          codebook_size, "sequence")
  fine = codes_from_ids(sequence[..., split + 1:], num_levels - num_coarse_levels,
                        NUM_SPECIAL + num_coarse_levels * codebook_size, codebook_size,
                        "sequence")
  return _xp(coarse).concatenate([coarse, fine], axis=-1)


@gin.configurable(module="soundlm.audiolm")
@dataclasses.dataclass(frozen=True)
class Layout:
  """One stage's token layout: id ranges, lengths and valid ids per position."""
  stage: str
  semantic_vocab: int = 1024
  codebook_size: int = 1024
  num_levels: int = 12
  num_coarse_levels: int = 4
  crop_seconds: Optional[float] = None  # None: the paper's crop for the stage
  semantic_rate_hz: int = 25
  acoustic_rate_hz: int = 50

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
    for name in ("semantic_vocab", "codebook_size", "num_levels", "semantic_rate_hz",
                 "acoustic_rate_hz"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if not 0 < self.num_coarse_levels < self.num_levels:
      raise ValueError(f"num_coarse_levels must be in [1, num_levels={self.num_levels}),"
                       f" got {self.num_coarse_levels}")
    if self.acoustic_rate_hz % self.semantic_rate_hz:
      raise ValueError(
          f"acoustic_rate_hz={self.acoustic_rate_hz} must be a whole multiple of "
          f"semantic_rate_hz={self.semantic_rate_hz}")
    # Stages 1-2 crop whole semantic frames (hence whole acoustic frames too);
    # stage 3 needs whole acoustic frames only.
    unit, rate = (("acoustic", self.acoustic_rate_hz) if self.stage == "fine"
                  else ("semantic", self.semantic_rate_hz))
    frames = self.crop * rate
    if frames < 1 or abs(frames - round(frames)) > 1e-6:
      raise ValueError(f"crop_seconds={self.crop} must be a positive whole number of "
                       f"{unit} frames at {rate} Hz")

  def token_needs(self) -> dict:
    """What this stage reads of a token space, as `TokenSpace.check_compatible`
    keywords: its ids, levels and frame rates."""
    return dict(
        num_levels={"semantic": None, "coarse": self.num_coarse_levels,
                    "fine": self.num_levels}[self.stage],
        codebook_size=None if self.stage == "semantic" else self.codebook_size,
        semantic_vocab=None if self.stage == "fine" else self.semantic_vocab,
        codec_frame_rate=self.acoustic_rate_hz, semantic_frame_rate=self.semantic_rate_hz)

  @property
  def crop(self) -> float:
    """Training crop in seconds."""
    return PAPER_CROP_SECONDS[self.stage] if self.crop_seconds is None else self.crop_seconds

  @property
  def frames_per_semantic(self) -> int:
    return self.acoustic_rate_hz // self.semantic_rate_hz

  @property
  def crop_semantic_frames(self) -> int:
    """Semantic frames per crop (stages 1-2: the window of generation)."""
    return int(round(self.crop * self.semantic_rate_hz))

  @property
  def crop_acoustic_frames(self) -> int:
    """Acoustic frames per crop (stage 3: the chunk of generation)."""
    return int(round(self.crop * self.acoustic_rate_hz))

  @property
  def crop_frames(self) -> int:
    """Frames per crop in the stage's unit: acoustic frames in stage 3,
    semantic frames in stages 1-2 (what `num_frames` counts elsewhere)."""
    return self.crop_acoustic_frames if self.stage == "fine" else self.crop_semantic_frames

  @property
  def target_base(self) -> int:
    """First id of the stage's targets."""
    return {"semantic": NUM_SPECIAL, "coarse": NUM_SPECIAL + self.semantic_vocab,
            "fine": NUM_SPECIAL + self.num_coarse_levels * self.codebook_size}[self.stage]

  @property
  def target_width(self) -> int:
    """Number of ids valid at one target position."""
    return self.semantic_vocab if self.stage == "semantic" else self.codebook_size

  @property
  def target_levels(self) -> int:
    """Target positions cycle through this many id ranges (RVQ levels)."""
    return {"semantic": 1, "coarse": self.num_coarse_levels,
            "fine": self.num_levels - self.num_coarse_levels}[self.stage]

  @property
  def vocab_size(self) -> int:
    return self.target_base + self.target_levels * self.target_width

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  def conditioning_length(self, num_frames: int) -> int:
    """Tokens up to and including START for `num_frames` frames of the stage's unit.

    Frames are semantic frames in stages 1-2 and acoustic frames in stage 3.
    """
    return {"semantic": 1, "coarse": num_frames + 1,
            "fine": num_frames * self.num_coarse_levels + 1}[self.stage]

  def target_length(self, num_frames: int) -> int:
    """Target tokens for `num_frames` frames (semantic frames in stages 1-2)."""
    per_frame = {"semantic": 1, "coarse": self.frames_per_semantic * self.num_coarse_levels,
                 "fine": self.num_levels - self.num_coarse_levels}[self.stage]
    return num_frames * per_frame

  def sequence_length(self, num_frames: Optional[int] = None) -> int:
    """Model sequence length of `num_frames` frames (default: one training crop)."""
    if num_frames is None:
      num_frames = self.crop_frames
    return self.conditioning_length(num_frames) + self.target_length(num_frames)

  def valid_range(self, target_index):
    """[low, high) of the ids valid at target position `target_index` (0 = first
    token after START); works on ints, numpy and traced jax values."""
    level = target_index % self.target_levels
    low = self.target_base + level * self.target_width
    return low, low + self.target_width

  def target_mask(self, tokens):
    """True where `tokens` are targets of this stage (START and PAD are not)."""
    return (tokens >= self.target_base) & (tokens < self.vocab_size)

  def target_ids(self, targets, name: str = "targets"):
    """The stage's targets -> their ids [..., n]: semantic tokens [..., n] in
    stage 1, codes [..., T, target_levels] (levels of this stage) otherwise."""
    if self.stage == "semantic":
      return semantic_ids(targets, self.semantic_vocab)
    if np.ndim(targets) < 2 or np.shape(targets)[-1] != self.target_levels:
      raise ValueError(f"{name} must be [..., frames, {self.target_levels}] codes of the "
                       f"{self.stage} levels, got shape {np.shape(targets)}")
    return acoustic_ids(targets, self.target_base, self.codebook_size, name)

  def targets_from_ids(self, ids, name: str = "ids"):
    """Inverse of `target_ids` (a whole number of frames of ids)."""
    if self.stage == "semantic":
      return semantic_from_ids(ids, self.semantic_vocab, name)
    return codes_from_ids(ids, self.target_levels, self.target_base, self.codebook_size,
                          name)

  def to_sequence(self, semantic=None, codes=None):
    """The stage's model sequence from semantic tokens and/or codes [..., T, Q]."""
    if self.stage == "semantic":
      return semantic_sequence(semantic, self.semantic_vocab)
    if self.stage == "coarse":
      return coarse_sequence(semantic, codes, self.num_coarse_levels, self.codebook_size,
                             self.semantic_vocab, self.frames_per_semantic)
    self._check_levels(codes)
    return fine_sequence(codes, self.num_coarse_levels, self.codebook_size)

  def from_sequence(self, sequence):
    """Inverse of `to_sequence`: semantic, (semantic, coarse codes) or codes."""
    if self.stage == "semantic":
      return semantic_from_sequence(sequence, self.semantic_vocab)
    if self.stage == "coarse":
      return coarse_from_sequence(sequence, self.num_coarse_levels, self.codebook_size,
                                  self.semantic_vocab, self.frames_per_semantic)
    return fine_from_sequence(sequence, self.num_levels, self.num_coarse_levels,
                              self.codebook_size)

  def _check_levels(self, codes):
    if codes is None or np.ndim(codes) < 2 or np.shape(codes)[-1] != self.num_levels:
      raise ValueError(f"codes must be [..., frames, {self.num_levels}], got "
                       f"{None if codes is None else np.shape(codes)}")
