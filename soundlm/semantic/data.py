"""Random fixed-length crops of a speech corpus for w2v-BERT pre-training.

Numpy only. Batch i of host h is drawn from a generator seeded by
(seed, h, i), so the position to restore is just the batch counter.
"""
import gin
import jax
import numpy as np

from soundlm.semantic.features import SAMPLE_RATE


@gin.configurable
class SpeechCrops:
  """Iterator of {'wav': float32 [batch_size, crop]} from the built-in corpus's
  speech (or one made under `root` by `python -m soundlm.io.corpus.make`)."""

  def __init__(self, batch_size: int = 8, crop_seconds: float = 2.0, split: str = "train",
               root: str | None = None, seed: int = 0):
    from soundlm.io import corpus
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
    self.batch_size, self.seed, self.step = batch_size, seed, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, jax.process_index(), self.step])
    self.step += 1
    picks = rng.integers(0, len(self.waveforms), self.batch_size)
    crops = []
    for i in picks:
      wav = self.waveforms[i]
      start = rng.integers(0, wav.size - self.crop + 1)
      crops.append(wav[start:start + self.crop])
    return {"wav": np.stack(crops).astype(np.float32)}

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
