"""Generation evaluation: a pipeline that returns the real continuations pins
the wiring exactly; a tiny random pipeline runs the whole path."""
import json
import math

import numpy as np
import pytest

from soundlm.evaluation import detector, generation, speaker
from soundlm.generate import Pipeline
from soundlm.io import corpus

RATE = 16_000


class TokenCodec:
  """A deterministic stand-in for a codec: per 20 ms frame, 4 levels of codes
  from the frame's loudness and zero crossings."""
  frame_rate, hop_length, codebook_size = 50, 320, 16

  def encode(self, wav):
    wav = np.asarray(wav)
    frames = wav[:, :wav.shape[1] // self.hop_length * self.hop_length].reshape(
        wav.shape[0], -1, self.hop_length)
    loud = np.minimum(np.abs(frames).mean(-1) * 200, 15).astype(np.int32)
    crossings = np.minimum((np.diff(np.sign(frames), axis=-1) != 0).sum(-1) // 8, 15)
    return np.stack([loud, crossings, (loud + crossings) % 16, np.abs(loud - crossings)], -1)


class RealContinuations:
  """Continues each built-in clip's prompt with the clip itself."""
  sample_rate, samples_per_semantic = RATE, 640

  def __init__(self, with_soundstorm=True):
    self.codec = TokenCodec()
    self.soundstorm = object() if with_soundstorm else None
    self.clips = {c.waveform[:self.samples_per_semantic].tobytes(): c.waveform
                  for c in corpus.load_builtin("validation", "speech")}
    self.calls = []

  def generate(self, prompts, duration, rng=0, *, acoustic=None):
    self.calls.append((prompts.shape, duration, acoustic))
    total = round(duration * self.sample_rate)
    return np.stack([self.clips[p[:self.samples_per_semantic].tobytes()][:total]
                     for p in prompts])


@pytest.fixture(scope="module")
def encoder():
  return speaker.VoiceEncoder.load()


def test_real_continuations_score_as_real(encoder):
  pipeline = RealContinuations()
  figures = generation.evaluate_generation(
      pipeline, prompt_seconds=1.63, duration=4.0, samples_per_prompt=2, encoder=encoder,
      detector_config=detector.DetectorConfig(steps=50))
  json.dumps(figures)
  prompts = sum(c.waveform.size >= 4 * RATE for c in corpus.load_builtin("validation", "speech"))
  assert prompts >= 5
  assert pipeline.calls == [((2 * prompts, 25_600), 4.0, "soundstorm"),
                            ((2 * prompts, 25_600), 4.0, "audiolm")]
  assert figures["prompts"] == prompts and figures["samples_per_prompt"] == 2
  assert figures["prompt_seconds"] == 1.6 and math.isclose(figures["continuation_seconds"], 2.4)
  for name in ("soundstorm", "audiolm"):
    # Only the generated part is scored, against the prompt it continues.
    assert math.isclose(figures[f"speaker/{name}"], figures["speaker/real_continuation"],
                        abs_tol=1e-6)
    # A prompt's real and generated continuations are held out together: identical
    # tokens get identical scores, so exactly one of the pair is right.
    assert figures[f"detector/{name}/accuracy"] == 0.5
    assert figures[f"detector/{name}/test_generated_clips"] == 2 * figures[
        f"detector/{name}/test_real_clips"]
  # The validation split has one clip per speaker: the other clip comes from train.
  assert figures["speaker/same_speaker_prompts"] == prompts
  assert figures["speaker/real_continuation"] > figures["speaker/different_speaker"] + 0.1
  assert figures["speaker/same_speaker_other_clip"] > figures["speaker/different_speaker"] + 0.1
  assert figures["speaker/noise"] < figures["speaker/different_speaker"]
  assert figures["seconds/total"] >= figures["seconds/speaker"] + figures["seconds/detector"]


def test_bad_settings_are_refused(encoder):
  pipeline = RealContinuations(with_soundstorm=False)
  with pytest.raises(ValueError, match=r"\['soundstorm'\] are not in the pipeline"):
    generation.evaluate_generation(pipeline, acoustic=["soundstorm"], encoder=encoder)
  with pytest.raises(ValueError, match="needs at least 3"):
    generation.evaluate_generation(pipeline, max_prompts=2, encoder=encoder)
  with pytest.raises(ValueError, match="needs at least 3"):
    generation.evaluate_generation(pipeline, duration=30.0, encoder=encoder)
  with pytest.raises(ValueError, match="shorter than duration"):
    generation.evaluate_generation(pipeline, prompt_seconds=3.0, duration=3.0, encoder=encoder)
  assert not pipeline.calls


def test_a_tiny_random_pipeline_is_evaluated(encoder):
  pipeline = Pipeline.random("tiny", seed=0)
  figures = generation.evaluate_generation(pipeline, prompt_seconds=0.5, duration=1.0,
                                           acoustic=["soundstorm"], max_prompts=4,
                                           encoder=encoder)
  assert all(math.isfinite(v) for v in figures.values())
  assert figures["prompts"] == 4 and figures["prompt_seconds"] == 0.48
  assert figures["detector/soundstorm/test_real_clips"] == 1  # of 4 prompts, 30 % held out
  assert 0 <= figures["detector/soundstorm/accuracy"] <= 1
  # Untrained models do not keep the voice that the real continuation has.
  assert figures["speaker/soundstorm"] < figures["speaker/real_continuation"] - 0.1
  assert "speaker/audiolm" not in figures and figures["seconds/generate_soundstorm"] > 0
