"""Codes from a known random process, for tests and smoke runs of training.

Level 0 at frame t is a fixed function of the semantic token aligned to t;
level q > 0 is a fixed function of level q - 1 at the same frame; each token
is replaced by a uniformly random code with probability `noise`. A model that
learns the process predicts level q from the coarser levels (or level 0 from
the semantic tokens) with accuracy near 1 - noise * (1 - 1/K).

With `num_voices` V > 1 every sequence also draws a voice v, which the
semantic tokens do not carry (as a speaker's voice is in the acoustic tokens
only): level 0 is then v * K/V + (voice v's own function of the semantic
token), so the semantic tokens alone leave each frame V-way ambiguous while
any known frame of level 0 tells the voice of all the others. Decoding the
level in one or two parallel passes draws the voice frame by frame; MaskGIT's
iterations, which condition later frames on those committed earlier, keep
one voice per sequence (`voice_agreement` measures it).

With `markov=True` every level is a `soundlm.io.chains.ConditionedChain`
along the frames instead: frame t of level 0 takes a fixed function of its
semantic token with probability `follow_conditioning`, a fixed function of
frame t - 1 of level 0 with probability `follow_previous`, else a uniform
code; level q > 0 the same with level q - 1 of frame t in place of the
semantic token. Given the coarser levels and the earlier frames of its
level, each code's distribution is known exactly (`log_prob`), and so is
the loss floor of predicting the frames of each level left to right
(`entropy`). Decoding a level in one parallel pass draws each frame from
its marginal and breaks the chain; MaskGIT's iterations keep it.
"""
import gin
import numpy as np

from soundlm.io.chains import ConditionedChain
from soundlm.io.iterators import SeededIterator


@gin.configurable
class KnownProcessCodes(SeededIterator):
  """Data iterator of {'semantic': int32 [B', T/r], 'codes': int32 [B', T, Q]},
  B' = B / hosts.

  `process_seed` fixes the process (its tables); `seed` the samples drawn
  from it, so training and evaluation data share a process but not examples.
  """

  def __init__(self, batch_size: int = 16, num_frames: int = 32, num_levels: int = 4,
               codebook_size: int = 16, semantic_vocab: int = 16, noise: float = 0.1,
               frames_per_semantic_token: int = 2, num_voices: int = 1, markov: bool = False,
               follow_conditioning: float = 0.3, follow_previous: float = 0.6,
               process_seed: int = 0, seed: int = 0):
    if num_frames % frames_per_semantic_token:
      raise ValueError(f"num_frames = {num_frames} must be a multiple of "
                       f"frames_per_semantic_token = {frames_per_semantic_token}")
    if not 0.0 <= noise <= 1.0:
      raise ValueError(f"noise must be in [0, 1], got {noise}")
    if num_voices < 1 or codebook_size % num_voices:
      raise ValueError(f"num_voices must be >= 1 and divide codebook_size = {codebook_size}, "
                       f"got {num_voices}")
    if markov and num_voices > 1:
      raise ValueError("markov and num_voices > 1 are two different processes; pick one")
    super().__init__(batch_size, seed)
    self.num_frames, self.num_levels = num_frames, num_levels
    self.codebook_size, self.semantic_vocab = codebook_size, semantic_vocab
    self.noise, self.frames_per_token = noise, frames_per_semantic_token
    tables = np.random.default_rng(process_seed)
    self.semantic_to_code = tables.integers(0, codebook_size, semantic_vocab)
    self.level_maps = tables.integers(0, codebook_size, (num_levels, codebook_size))
    self.num_voices, self.codes_per_voice = num_voices, codebook_size // num_voices
    if num_voices > 1:
      self.voice_maps = tables.integers(0, self.codes_per_voice, (num_voices, semantic_vocab))
    self.chain = (ConditionedChain(num_levels, max(semantic_vocab, codebook_size), codebook_size,
                                   follow_conditioning, follow_previous, tables)
                  if markov else None)

  def _noisy(self, rng, codes):
    replace = rng.random(codes.shape) < self.noise
    return np.where(replace, rng.integers(0, self.codebook_size, codes.shape), codes)

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    semantic = rng.integers(0, self.semantic_vocab,
                            (self.local_batch_size, self.num_frames // self.frames_per_token))
    if self.chain is not None:
      levels = [self.chain.sample(rng, 0, self._aligned(semantic))]
      for q in range(1, self.num_levels):
        levels.append(self.chain.sample(rng, q, levels[-1]))
      return {"semantic": semantic.astype(np.int32),
              "codes": np.stack(levels, axis=-1).astype(np.int32)}
    if self.num_voices > 1:
      voices = rng.integers(0, self.num_voices, (self.local_batch_size, 1))
      level = self._noisy(rng, voices * self.codes_per_voice
                          + self.voice_maps[voices, self._aligned(semantic)])
    else:
      level = self._noisy(rng, self.expected_codes(semantic, None, 0))
    levels = [level]
    for q in range(1, self.num_levels):
      level = self._noisy(rng, self.level_maps[q][level])
      levels.append(level)
    return {"semantic": semantic.astype(np.int32),
            "codes": np.stack(levels, axis=-1).astype(np.int32)}

  def expected_codes(self, semantic: np.ndarray, coarser: np.ndarray, level: int):
    """The noise-free code of `level` given semantic tokens (without voices)
    or the level above."""
    if level == 0:
      return self.semantic_to_code[self._aligned(semantic)]
    return self.level_maps[level][coarser]

  def _aligned(self, semantic):
    """Semantic tokens [B, T/r] -> the token of each frame [B, T]."""
    return np.repeat(semantic, self.frames_per_token, axis=1)

  def _check_known(self):
    if self.num_voices > 1:
      raise ValueError("the voices' process has no per-code probability here: a frame's "
                       "voice is known only from the other frames")

  def log_prob(self, semantic: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """float [B, T, Q]: log P of each code given the coarser levels of its frame
    (level 0: its semantic token) and, with `markov`, the previous frame of its
    level: the best a left-to-right, coarse-to-fine predictor can assign."""
    self._check_known()
    codes = np.asarray(codes)
    if self.chain is not None:
      conditioning = [self._aligned(semantic)] + [codes[..., q - 1]
                                                  for q in range(1, self.num_levels)]
      return np.stack([self.chain.log_prob(q, conditioning[q], codes[..., q])
                       for q in range(self.num_levels)], axis=-1)
    expected = np.stack([self.expected_codes(semantic, codes[..., q - 1] if q else None, q)
                         for q in range(self.num_levels)], axis=-1)
    other = self.noise / self.codebook_size
    return np.log(np.where(codes == expected, 1.0 - self.noise + other, other))

  def entropy(self) -> float:
    """Nats per code of the best left-to-right, coarse-to-fine predictor
    (the mean of -`log_prob` over the process's own codes)."""
    self._check_known()
    if self.chain is not None:
      return self.chain.entropy(self.num_frames)
    other = self.noise / self.codebook_size
    follow = 1.0 - self.noise + other
    spread = (self.codebook_size - 1) * other * np.log(other) if other > 0 else 0.0
    return float(-follow * np.log(follow) - spread)

  def voice_agreement(self, level0: np.ndarray) -> np.ndarray:
    """float [B]: the fraction of each sequence's level-0 frames in the
    sequence's most common voice (1 when the whole level keeps one voice)."""
    voices = np.asarray(level0) // self.codes_per_voice
    counts = np.stack([np.bincount(row, minlength=self.num_voices) for row in voices])
    return counts.max(axis=1) / voices.shape[1]
