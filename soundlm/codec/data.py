"""Random fixed-length waveform crops for codec training (numpy only, resumable)."""
from typing import Optional

import gin
import jax
import numpy as np

from soundlm.io import corpus


@gin.configurable
class WaveformCrops:
  """Batches {'waveform': float32 [B, crop_length]} of random crops of speech clips.

  Clips come from the built-in corpus (or one made under `root`); a clip
  shorter than the crop is an error, not padded. Each batch is a pure function
  of (seed, host, batch index), so the position is the number of batches drawn.
  """

  def __init__(self, batch_size: int = 16, crop_length: int = 8000,
               split: str = "train", kind: str = "speech", root: Optional[str] = None,
               sample_rate: int = 16_000, max_clips: Optional[int] = None, seed: int = 0):
    if batch_size % jax.process_count():
      raise ValueError(f"batch_size {batch_size} is not divisible by "
                       f"{jax.process_count()} hosts")
    if crop_length < 1:
      raise ValueError(f"crop_length must be positive, got {crop_length}")
    clips = corpus.load_builtin(split, kind, root=root, max_clips=max_clips)
    if not clips:
      raise ValueError(f"no {kind} clips in split {split!r}")
    for clip in clips:
      if clip.sample_rate != sample_rate:
        raise ValueError(f"{clip.path}: sample rate {clip.sample_rate}, expected {sample_rate}")
      if clip.waveform.shape[0] < crop_length:
        raise ValueError(f"{clip.path}: {clip.waveform.shape[0]} samples is shorter than "
                         f"crop_length {crop_length}")
    self.waveforms = [clip.waveform.astype(np.float32) for clip in clips]
    self.local_batch_size = batch_size // jax.process_count()
    self.crop_length, self.seed = crop_length, seed
    self._position = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, jax.process_index(), self._position])
    self._position += 1
    batch = np.empty((self.local_batch_size, self.crop_length), np.float32)
    for row, clip in enumerate(rng.integers(0, len(self.waveforms), self.local_batch_size)):
      wav = self.waveforms[clip]
      start = rng.integers(0, wav.shape[0] - self.crop_length + 1)
      batch[row] = wav[start:start + self.crop_length]
    return {"waveform": batch}

  def get_state(self) -> dict:
    return {"position": self._position}

  def set_state(self, state: dict) -> None:
    self._position = int(state["position"])
