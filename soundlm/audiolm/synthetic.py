"""Synthetic stage sequences with a known entropy, for tests and smoke runs.

By default the stage's targets (semantic tokens in stage 1, the flattened
coarse codes in stage 2, the flattened fine codes in stage 3) follow one fixed
random Markov chain started from its stationary distribution and the
conditioning (semantic tokens in stage 2, coarse codes in stage 3) is uniform
noise, so the best possible loss per target token is known exactly
(`entropy`).

With `conditioned=True` (stages 2 and 3) the conditioning still is uniform
noise, but every target level is a `soundlm.io.chains.ConditionedChain`
along the acoustic frames: level l of frame t is a fixed function of the
frame's conditioning token and of level l at frame t - 1, plus noise. The
conditioning token of a frame is its aligned semantic token in stage 2 (the
same for the frames_per_semantic frames of a semantic frame) and its coarse
code of level l mod Q' in stage 3. The best loss is then the chain's
`entropy` (about 0.57 nats with 8 codes, noise 0.1 and 16 frames) while a
stage that ignores, shuffles or misaligns its conditioning, or ignores the
previous frame, pays about log K (2.08 nats with 8 codes) on those targets.
"""
from typing import Optional

import gin
import numpy as np

from soundlm.audiolm.layouts import Layout
from soundlm.io.chains import ConditionedChain
from soundlm.io.iterators import SeededIterator


@gin.configurable(module="soundlm.audiolm")
class MarkovStageData(SeededIterator):
  """Batches {'tokens': [B / hosts, L]} of one stage; a data iterator for the trainer.

  `num_frames` counts semantic frames in stages 1-2 and acoustic frames in
  stage 3 (default: one training crop). The process is drawn from
  `chain_seed`, the sequences from `seed`, so an eval iterator with another
  `seed` sees fresh sequences of the same process. `follow_conditioning`,
  `follow_previous`: the conditioned chains' probabilities of the
  conditioning's and the previous frame's code.
  """

  def __init__(self, layout: Layout = gin.REQUIRED, batch_size: int = 16,
               num_frames: Optional[int] = None, seed: int = 0, chain_seed: int = 0,
               concentration: float = 0.2, conditioned: bool = False,
               follow_conditioning: float = 0.6, follow_previous: float = 0.3):
    super().__init__(batch_size, seed)
    if conditioned and layout.stage == "semantic":
      raise ValueError("conditioned: needs a stage with conditioning (coarse or fine), "
                       "got the semantic stage")
    self.layout, self.conditioned = layout, conditioned
    if num_frames is None:
      num_frames = layout.crop_frames
    if num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    self.num_frames = num_frames
    rng = np.random.default_rng(chain_seed)
    if conditioned:
      source = layout.semantic_vocab if layout.stage == "coarse" else layout.codebook_size
      self.chain = ConditionedChain(layout.target_levels, source, layout.codebook_size,
                                    follow_conditioning, follow_previous, rng)
      return
    states = layout.target_width
    self.transitions = rng.dirichlet(np.full(states, concentration), size=states)
    values, vectors = np.linalg.eig(self.transitions.T)
    stationary = np.abs(np.real(vectors[:, np.argmin(np.abs(values - 1))]))
    self.stationary = stationary / stationary.sum()

  @property
  def acoustic_frames(self) -> int:
    """Frames of target codes per sequence (0 in the semantic stage)."""
    if self.layout.stage == "semantic":
      return 0
    scale = self.layout.frames_per_semantic if self.layout.stage == "coarse" else 1
    return self.num_frames * scale

  def entropy(self) -> float:
    """Nats per target token of the best predictor (the process itself)."""
    if self.conditioned:
      return self.chain.entropy(self.acoustic_frames)
    n = self.layout.target_length(self.num_frames)
    logs = np.log(np.where(self.transitions > 0, self.transitions, 1.0))
    rate = -(self.stationary * (self.transitions * logs).sum(axis=1)).sum()
    first = -(self.stationary * np.log(np.maximum(self.stationary, 1e-30))).sum()
    return float((first + (n - 1) * rate) / n)

  def _chain(self, rng, length):
    states = np.empty((self.local_batch_size, length), np.int32)
    states[:, 0] = rng.choice(len(self.stationary), self.local_batch_size, p=self.stationary)
    cumulative = np.cumsum(self.transitions, axis=1)
    for t in range(1, length):
      u = rng.random((self.local_batch_size, 1))
      states[:, t] = np.minimum((u > cumulative[states[:, t - 1]]).sum(axis=1),
                                len(self.stationary) - 1)
    return states

  def conditioning_tokens(self, semantic: Optional[np.ndarray],
                          coarse: Optional[np.ndarray]) -> np.ndarray:
    """Each target level's conditioning token per acoustic frame, [B, T, levels]:
    the aligned semantic token (stage 2, semantic [B, S]) or the frame's
    coarse code of level l mod Q' (stage 3, coarse [B, T, Q'])."""
    layout = self.layout
    if layout.stage == "coarse":
      aligned = np.repeat(semantic, layout.frames_per_semantic, axis=1)
      return np.repeat(aligned[..., None], layout.target_levels, axis=-1)
    return coarse[..., np.arange(layout.target_levels) % layout.num_coarse_levels]

  def log_prob(self, conditioning: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log P of each target code [B, T, levels] under the conditioned process,
    given `conditioning_tokens` [B, T, levels]."""
    return np.stack([self.chain.log_prob(l, conditioning[..., l], targets[..., l])
                     for l in range(self.layout.target_levels)], axis=-1)

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    layout, batch = self.layout, self.local_batch_size
    if layout.stage == "semantic":
      return {"tokens": layout.to_sequence(semantic=self._chain(rng, self.num_frames))}
    semantic = coarse = None
    if layout.stage == "coarse":
      semantic = rng.integers(0, layout.semantic_vocab, (batch, self.num_frames))
    else:
      coarse = rng.integers(0, layout.codebook_size,
                            (batch, self.num_frames, layout.num_coarse_levels))
    if self.conditioned:
      conditioning = self.conditioning_tokens(semantic, coarse)
      targets = np.stack([self.chain.sample(rng, l, conditioning[..., l])
                          for l in range(layout.target_levels)], axis=-1)
    else:
      targets = self._chain(rng, layout.target_length(self.num_frames)).reshape(
          batch, self.acoustic_frames, layout.target_levels)
    if layout.stage == "coarse":
      return {"tokens": layout.to_sequence(semantic=semantic, codes=targets)}
    return {"tokens": layout.to_sequence(codes=np.concatenate([coarse, targets], axis=-1))}
