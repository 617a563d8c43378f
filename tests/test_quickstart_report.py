"""The quickstart refuses bad arguments before training, and its report names
the stage that limits the quality from the evaluation's figures."""
import pytest

from soundlm import quickstart


def _evaluation(si_snr: float, mel: float, soundstorm_similarity: float) -> dict:
  def row(name, kind, levels, si, mel_distance):
    figure = lambda mean: {"mean": mean, "std": 0.0, "defined": 2, "undefined": 0}  # noqa: E731
    return {"name": name, "kind": kind, "levels": levels,
            "kbps": None if levels is None else 0.3 * levels,
            "figures": {"si_snr": figure(si), "mel_distance": figure(mel_distance)}}
  return {
      "codec": {"codec": {"model": "SoundStream", "sample_rate": 16000, "frame_rate": 50.0,
                          "num_levels": 8, "codebook_size": 64},
                "metrics": ["si_snr", "mel_distance"], "clips": ["a", "b"],
                "seconds_of_audio": 8.0, "metric_sample_rate": 16000, "resampled": False,
                "delay_samples": 320,
                "rows": [row("1 level", "codec", 1, si_snr - 3, mel + 0.2),
                         row("8 levels", "codec", 8, si_snr, mel),
                         row("delayed", "baseline", None, -20.0, 0.66)]},
      "generation": {"speaker/noise": 0.45, "speaker/real_continuation": 0.82,
                     "speaker/soundstorm": soundstorm_similarity,
                     "detector/soundstorm/accuracy": 1.0}}


@pytest.mark.parametrize("prompt_seconds, duration, message", [
    (0.0, 3.0, "--prompt_seconds must be positive"),
    (2.0, 2.0, "must be longer than --prompt_seconds"),
    (1.0, 600.0, "no clip of --duration 600.0 s"),
])
def test_bad_arguments_are_refused_before_training(prompt_seconds, duration, message):
  with pytest.raises(ValueError, match=message):
    quickstart.validation_prompts(prompt_seconds, duration)


def test_prompts_come_from_the_held_out_split():
  prompts = quickstart.validation_prompts(1.0, 3.0)
  assert [len(prompts["speech"]), len(prompts["piano"])] == [2, 1]
  assert all(c.meta["split"] == "validation" and c.waveform.size >= 3 * c.sample_rate
             for clips in prompts.values() for c in clips)


def test_a_codec_below_its_target_limits_the_quality():
  verdict = quickstart.limiting_stage(_evaluation(-30.0, 1.2, 0.8))
  assert verdict.startswith("the codec") and "-30.0 dB" in verdict and "0.660" in verdict
  # The all-levels row decides, and a mel distance above the delayed input fails too.
  assert quickstart.limiting_stage(_evaluation(9.0, 0.7, 0.8)).startswith("the codec")


def test_continuations_that_lose_the_voice_blame_the_token_models():
  verdict = quickstart.limiting_stage(_evaluation(9.0, 0.5, 0.46))
  assert verdict.startswith("the token models: soundstorm") and "0.46" in verdict
  assert "meets its target" in quickstart.limiting_stage(_evaluation(9.0, 0.5, 0.8))


def test_report_holds_the_verdict_and_the_codec_table(tmp_path):
  path = quickstart.write_report(
      str(tmp_path), {"total": 10.0},
      {"speech_soundstorm_x": {"prompt": "p.flac", "seconds": 2.0, "compile_seconds": 5.0,
                               "real_time_factor": 0.3}},
      _evaluation(-30.0, 1.2, 0.8))
  text = open(path).read()
  assert "**What limits the quality now:** the codec" in text
  assert "| 8 levels | 2.40 | -30.000 | 1.200 |" in text
  assert "| baseline: delayed | n/a | -20.000 | 0.660 |" in text
  assert "| speaker/soundstorm | 0.800 |" in text
  assert "| speech_soundstorm_x.wav (speech_soundstorm_x.png) | p.flac | 5.0 | 2.0 | 0.30 |" in text


@pytest.mark.parametrize("line, shown", [
    ("I1202 12:00:01 trainer.py:310] step 40/400: loss 1.2", True),
    ("Traceback (most recent call last):", True),
    ("ValueError: crop_seconds must be > 0", True),
    ("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED", True),
    ("E0000 00:00:1796169956.192562 2272 common_lib.cc:554] INVALID_ARGUMENT: Error: "
     "unexpected worker hostname", False),
    ("I1202 12:00:01 checkpoints.py:88] saving step 400", False),
])
def test_console_shows_progress_and_errors_but_not_libtpu_start_up(line, shown):
  assert bool(quickstart.PROGRESS.search(line)) == shown
