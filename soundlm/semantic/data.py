"""Random fixed-length crops of a speech corpus for w2v-BERT pre-training
(numpy only, resumable)."""
import gin
import numpy as np

from soundlm.io import corpus
from soundlm.io.iterators import SeededIterator
from soundlm.semantic.features import SAMPLE_RATE


@gin.configurable
class SpeechCrops(SeededIterator):
  """Batches {'wav': float32 [batch_size / hosts, crop]} from the built-in
  corpus's speech (or one made under `root` by `python -m soundlm.io.corpus.make`)."""

  def __init__(self, batch_size: int = 8, crop_seconds: float = 2.0, split: str = "train",
               root: str | None = None, seed: int = 0):
    super().__init__(batch_size, seed)
    clips = corpus.load_builtin(split, "speech", root=root)
    if not clips:
      raise ValueError(f"no speech clips in split {split!r}")
    self.crop = int(round(crop_seconds * SAMPLE_RATE))
    for clip in clips:
      if clip.sample_rate != SAMPLE_RATE:
        raise ValueError(f"{clip.path}: {clip.sample_rate} Hz, expected {SAMPLE_RATE}")
    shortest = min(clips, key=lambda c: c.waveform.size)
    if shortest.waveform.size < self.crop:
      raise ValueError(f"crop_seconds={crop_seconds} is longer than clip {shortest.path} "
                       f"({shortest.waveform.size / SAMPLE_RATE:.2f} s)")
    self.waveforms = [clip.waveform for clip in clips]

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    crops = []
    for i in rng.integers(0, len(self.waveforms), self.local_batch_size):
      wav = self.waveforms[i]
      start = rng.integers(0, wav.size - self.crop + 1)
      crops.append(wav[start:start + self.crop])
    return {"wav": np.stack(crops).astype(np.float32)}
