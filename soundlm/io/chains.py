"""A known random process over code levels, shared by the synthetic data of
AudioLM's acoustic stages and SoundStorm: each level is a Markov chain along
time whose steps also depend on a conditioning token.

Level l at frame t, given its conditioning token c[t] (a semantic token, or a
code of another level at the same frame) and its own previous frame, is

  to_conditioning[l, c[t]]   with probability a (`follow_conditioning`),
  to_previous[l, x[t-1]]     with probability b (`follow_previous`),
  a uniformly random code    otherwise (probability 1 - a - b);

at t = 0, with no previous frame, the conditioning's code with probability a
and a uniform code otherwise. The conditioning's codes lie in the first half of
the K codes and the previous frame's in the second, so the two never coincide
and every step's distribution has the same entropy: the best predictor pays
exactly `entropy(T)` nats per code over T frames. A model that cannot read
the right conditioning token (zeroed, shuffled, one frame off) or the previous
frame loses a spike of probability a or b and pays measurably more; one that
reads neither is near log K.

Two parallel draws of neighbouring frames from their marginals rarely agree
with `to_previous`: the chain is what iterative (MaskGIT) decoding recovers
and one parallel pass cannot.
"""
import numpy as np


def _entropy(spikes, rest: float, num_rest: int) -> float:
  """Nats of a distribution with the given spike probabilities and `num_rest`
  other outcomes of probability `rest` each."""
  spikes = np.asarray(spikes, float)
  spread = num_rest * rest * np.log(rest) if rest > 0 else 0.0
  return float(-(spikes * np.log(spikes)).sum() - spread)


class ConditionedChain:
  """Maps of `num_levels` chains over `codebook_size` codes with
  `conditioning_vocab` conditioning tokens, drawn from `rng`."""

  def __init__(self, num_levels: int, conditioning_vocab: int, codebook_size: int,
               follow_conditioning: float, follow_previous: float,
               rng: np.random.Generator):
    a, b = follow_conditioning, follow_previous
    if a <= 0 or b <= 0 or a + b >= 1:
      raise ValueError("follow_conditioning and follow_previous must be positive with a sum "
                       f"below 1 (the rest is uniform noise), got {a} and {b}")
    if codebook_size < 4 or codebook_size % 2:
      raise ValueError(f"codebook_size must be even and >= 4, got {codebook_size}")
    self.codebook_size, self.a, self.b = codebook_size, a, b
    half = codebook_size // 2
    self.to_conditioning = rng.integers(0, half, (num_levels, conditioning_vocab))
    # Each code of the second half follows two codes, one of either half.
    order = np.argsort(rng.random((num_levels, half)), axis=-1)
    self.to_previous = half + np.concatenate([order, order], axis=-1)

  def _noise(self, first: bool) -> float:
    """Probability of one particular code drawn by the noise."""
    return (1.0 - self.a if first else 1.0 - self.a - self.b) / self.codebook_size

  def step_entropy(self, first: bool = False) -> float:
    """Nats of one frame's code given its conditioning token and previous code."""
    noise, k = self._noise(first), self.codebook_size
    if first:
      return _entropy([self.a + noise], noise, k - 1)
    return _entropy([self.a + noise, self.b + noise], noise, k - 2)

  def entropy(self, num_frames: int) -> float:
    """Nats per code of the best predictor of `num_frames` frames of a level."""
    return (self.step_entropy(True) + (num_frames - 1) * self.step_entropy()) / num_frames

  def sample(self, rng: np.random.Generator, level: int,
             conditioning: np.ndarray) -> np.ndarray:
    """Codes int32 [B, T] of `level` given conditioning tokens [B, T]."""
    batch, frames = conditioning.shape
    branch = rng.random((batch, frames))
    noise = rng.integers(0, self.codebook_size, (batch, frames))
    from_conditioning = self.to_conditioning[level][conditioning]
    codes = np.where(branch < self.a, from_conditioning, noise).astype(np.int32)
    for t in range(1, frames):
      follow = (branch[:, t] >= self.a) & (branch[:, t] < self.a + self.b)
      codes[:, t] = np.where(follow, self.to_previous[level][codes[:, t - 1]], codes[:, t])
    return codes

  def log_prob(self, level: int, conditioning: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """log P(codes[:, t] | conditioning[:, t], codes[:, t - 1]), float [B, T]."""
    codes = np.asarray(codes)
    probability = np.where(codes == self.to_conditioning[level][np.asarray(conditioning)],
                           self.a, 0.0)
    probability[:, 0] += self._noise(True)
    probability[:, 1:] += self._noise(False) + np.where(
        codes[:, 1:] == self.to_previous[level][codes[:, :-1]], self.b, 0.0)
    return np.log(probability)
