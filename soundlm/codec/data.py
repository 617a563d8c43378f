"""Random fixed-length waveform crops for codec training (numpy only, resumable)."""
from typing import Optional

import gin
import numpy as np

from soundlm.io import corpus
from soundlm.io.iterators import SeededIterator


@gin.configurable
class WaveformCrops(SeededIterator):
  """Batches {'waveform': float32 [B / hosts, crop_length]} of random crops of
  speech clips.

  Clips come from the built-in corpus (or one made under `root`); a clip
  shorter than the crop is an error, not padded.
  """

  def __init__(self, batch_size: int = 16, crop_length: int = 8000,
               split: str = "train", kind: str = "speech", root: Optional[str] = None,
               sample_rate: int = 16_000, max_clips: Optional[int] = None, seed: int = 0):
    super().__init__(batch_size, seed)
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
    self.crop_length = crop_length

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch = np.empty((self.local_batch_size, self.crop_length), np.float32)
    for row, clip in enumerate(rng.integers(0, len(self.waveforms), self.local_batch_size)):
      wav = self.waveforms[clip]
      start = rng.integers(0, wav.shape[0] - self.crop_length + 1)
      batch[row] = wav[start:start + self.crop_length]
    return {"waveform": batch}
