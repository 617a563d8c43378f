"""The codec-phases benchmark's report is consistent with itself."""
import json

import gin
import pytest

from soundlm.bench import codec_phases


def test_small_codec_phases_report(tmp_path):
  gin.clear_config()
  try:
    assert codec_phases.main(["--gin_bindings", "WaveformCrops.batch_size = 8",
                              "WaveformCrops.crop_length = 3200",
                              "SoundStreamDiscriminator.num_scales = 1",
                              "SoundStreamDiscriminator.stft_multipliers = (1, 2)",
                              "CodecTask.mel_windows = (256, 1024)", "--repeats=2",
                              f"--out_dir={tmp_path}"]) == 0
  finally:
    gin.clear_config()
  report = json.loads((tmp_path / "codec_phases.json").read_text())
  assert report["batch_shape"] == [8, 3200]
  # Times only, no ordering between them: the benchmark measures, the test
  # checks that every figure is there and the bound is their ratio.
  assert all(report[k] > 0 for k in ("generator_forward_s", "generator_only_s",
                                     "both_phases_s"))
  assert report["reuse_bound"] == pytest.approx(
      report["generator_forward_s"] / report["both_phases_s"])
