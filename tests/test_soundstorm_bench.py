"""Smoke run of the SoundStorm benchmark at the tiny size."""
import json

from soundlm.bench import common
from soundlm.bench import soundstorm as bench


def test_tiny_benchmark_reports_passes_and_consistent_flops(tmp_path):
  out = tmp_path / "bench.json"
  bench.main(["--size", "tiny", "--seconds", "1", "--batch", "2", "--repeats", "1",
              "--out", str(out)])
  report = json.loads(out.read_text())
  (row,) = report["results"]
  assert row["frames"] == 50 and row["batch"] == 2
  assert row["forward_passes"] == 16 + 3  # (16, 1, 1, 1) for 4 levels
  assert row["time_s"] > 0 and row["achieved_tflops"] > 0
  # The analytic count covers the matrix products; XLA also counts elementwise work.
  if row["xla_flops_per_pass"] is not None:
    ratio = row["xla_flops_per_pass"] / row["flops_per_pass"]
    assert 0.95 < ratio < 1.5, ratio


def test_peak_table_flags_its_source():
  peak, source = common.device_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16", None)
  assert peak == 989.0 and "datasheet" in source
  assert common.device_peak_tflops("cpu", "bfloat16", None)[0] is None
  assert common.device_peak_tflops("cpu", "float32", 1.5) == (1.5, "--peak_tflops")
