"""Synthetic stage sequences with a known entropy, for tests and smoke runs.

The stage's targets (semantic tokens in stage 1, the flattened coarse codes
in stage 2, the flattened fine codes in stage 3) follow one fixed random
Markov chain started from its stationary distribution; the conditioning
(semantic tokens in stage 2, coarse codes in stage 3) is uniform noise. So
the best possible loss per target token is known exactly (`entropy`).

With `conditioned=True` (stages 2 and 3) the first target level of every
frame is a fixed random function of the frame's conditioning token (the
semantic token of its frame; the frame's first coarse code) and the chain
runs over the other levels. Given the right conditioning those codes cost
nothing, so `entropy()` counts the chain's positions only; a model that
ignores or misaligns its conditioning pays about log(codebook size) for them.
"""
from typing import Optional

import gin
import numpy as np

from soundlm.audiolm.layouts import Layout
from soundlm.io.iterators import SeededIterator


@gin.configurable(module="soundlm.audiolm")
class MarkovStageData(SeededIterator):
  """Batches {'tokens': [B / hosts, L]} of one stage; a data iterator for the trainer.

  `num_frames` counts semantic frames in stages 1-2 and acoustic frames in
  stage 3 (default: one training crop). The chain is drawn from `chain_seed`,
  the sequences from `seed`, so an eval iterator with another `seed` sees
  fresh sequences of the same process.
  """

  def __init__(self, layout: Layout = gin.REQUIRED, batch_size: int = 16,
               num_frames: Optional[int] = None, seed: int = 0, chain_seed: int = 0,
               concentration: float = 0.2, conditioned: bool = False):
    super().__init__(batch_size, seed)
    if conditioned and (layout.stage == "semantic" or layout.target_levels < 2):
      raise ValueError("conditioned: needs a stage with conditioning and at least two "
                       f"target levels per frame, got the {layout.stage} stage with "
                       f"{layout.target_levels}")
    self.layout, self.conditioned = layout, conditioned
    if num_frames is None:
      num_frames = (layout.crop_acoustic_frames if layout.stage == "fine"
                    else layout.crop_semantic_frames)
    if num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    self.num_frames = num_frames
    states = layout.target_width
    rng = np.random.default_rng(chain_seed)
    self.transitions = rng.dirichlet(np.full(states, concentration), size=states)
    values, vectors = np.linalg.eig(self.transitions.T)
    stationary = np.abs(np.real(vectors[:, np.argmin(np.abs(values - 1))]))
    self.stationary = stationary / stationary.sum()
    # The first target level of a frame, as a function of its conditioning token.
    source = layout.semantic_vocab if layout.stage == "coarse" else layout.codebook_size
    self.table = rng.integers(0, states, source)

  def entropy(self) -> float:
    """Nats per target token of the best predictor (the chain itself, and the
    conditioning's function where `conditioned`)."""
    n = self.layout.target_length(self.num_frames)
    chained = self._chain_length(n)
    logs = np.log(np.where(self.transitions > 0, self.transitions, 1.0))
    rate = -(self.stationary * (self.transitions * logs).sum(axis=1)).sum()
    first = -(self.stationary * np.log(np.maximum(self.stationary, 1e-30))).sum()
    return float((first + (chained - 1) * rate) / n)

  def _chain_length(self, num_targets: int) -> int:
    """Targets drawn from the chain: all, or all but each frame's first level."""
    if not self.conditioned:
      return num_targets
    levels = self.layout.target_levels
    return num_targets // levels * (levels - 1)

  def _chain(self, rng, length):
    states = np.empty((self.local_batch_size, length), np.int32)
    states[:, 0] = rng.choice(len(self.stationary), self.local_batch_size, p=self.stationary)
    cumulative = np.cumsum(self.transitions, axis=1)
    for t in range(1, length):
      u = rng.random((self.local_batch_size, 1))
      states[:, t] = np.minimum((u > cumulative[states[:, t - 1]]).sum(axis=1),
                                len(self.stationary) - 1)
    return states

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    layout, batch = self.layout, self.local_batch_size
    targets = self._chain(rng, self._chain_length(layout.target_length(self.num_frames)))
    if layout.stage == "semantic":
      return {"tokens": layout.to_sequence(semantic=targets)}
    if layout.stage == "coarse":
      semantic = rng.integers(0, layout.semantic_vocab, (batch, self.num_frames))
      codes = self._frames(targets, np.repeat(semantic, layout.frames_per_semantic, axis=1))
      return {"tokens": layout.to_sequence(semantic=semantic, codes=codes)}
    coarse = rng.integers(0, layout.codebook_size,
                          (batch, self.num_frames, layout.num_coarse_levels))
    codes = np.concatenate([coarse, self._frames(targets, coarse[..., 0])], axis=-1)
    return {"tokens": layout.to_sequence(codes=codes)}

  def _frames(self, chain, conditioning):
    """Target codes [B, T, levels]: the chain's states, after each frame's
    conditioned first level when `conditioned` (conditioning: [B, T] ids)."""
    batch, frames = conditioning.shape
    chain = chain.reshape(batch, frames, -1)
    if not self.conditioned:
      return chain
    return np.concatenate([self.table[conditioning][..., None], chain], axis=-1)
