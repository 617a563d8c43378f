"""Smoke run of the training benchmark at the tiny size, through the real trainer."""
import json
import math

import pytest

from soundlm.bench import train as bench


def test_tiny_soundstorm_step_reports_consistent_rates(tmp_path):
  out = tmp_path / "out"
  bench.main(["--size", "tiny", "--model", "soundstorm", "--batch", "4", "--mesh", "2,1,1",
              "--steps", "2", "--warmup", "1", "--peak_tflops", "0.5",
              "--out_dir", str(out)])
  report = json.loads((out / "train.json").read_text())
  assert report["num_devices"] == 2 and report["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
  (row,) = report["results"]
  assert row["model"] == "soundstorm" and row["batch"] == 4 and not row["out_of_memory"]
  assert row["positions"] == 100  # a 2 s window of 50 Hz frames
  assert row["median_s"] > 0 and len(row["times_s"]) == 2 and row["compile_s"] > 0
  assert row["tokens_per_s"] == pytest.approx(4 * 100 / row["median_s"])
  assert row["audio_seconds_per_s"] == pytest.approx(4 * 2.0 / row["median_s"])
  assert row["finite"] and math.isfinite(row["loss_last"])
  # XLA's count of the whole step (backward, optimizer and elementwise work
  # included) lands a little above 6 N tokens + attention.
  assert row["flops_per_step"] > 0
  assert 0.9 < row["flops_per_step"] / row["analytic_flops_per_step"] < 1.5
  achieved = row["flops_per_step"] / row["median_s"] / 1e12
  assert row["achieved_tflops"] == pytest.approx(achieved)
  assert row["mfu"] == pytest.approx(achieved / (0.5 * 2))
  assert (out / "train.md").read_text().count("| soundstorm | 4 | 100 |") == 1


def test_markdown_regenerates_from_json(tmp_path):
  report = {"benchmark": "train", "size": "paper", "dtype": "bfloat16", "steps": 3,
            "warmup": 2, "partitioning": "gin/partitioning/fsdp.gin",
            "mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1,
            "peak_tflops": 989.0, "peak_source": "H100 bf16 dense datasheet",
            "matmul_tflops": 660.0, "command": "python -m soundlm.bench.train",
            "environment": {"device_kind": "NVIDIA H100 80GB HBM3", "platform": "gpu",
                            "jax_version": "0", "date": "2026-11-23 00:00 UTC"},
            "results": [
                {"model": "soundstorm", "batch": 8, "positions": 1500, "out_of_memory": False,
                 "median_s": 0.1, "compile_s": 30.0, "tokens_per_s": 120000.0,
                 "audio_seconds_per_s": 2400.0, "flops_per_step": 3.0e13,
                 "achieved_tflops": 300.0, "mfu": 0.303, "mfu_analytic": 0.29,
                 "fraction_of_matmul": 0.45},
                {"model": "soundstorm", "batch": 32, "positions": 1500,
                 "out_of_memory": True}]}
  saved = tmp_path / "train.json"
  saved.write_text(json.dumps(report))
  document = tmp_path / "BENCHMARKS.md"
  document.write_text("# Benchmarks\n<!-- BEGIN gpu-paper:train -->\npending\n"
                      "<!-- END gpu-paper:train -->\ntail\n")
  bench.main(["--from_json", str(saved), "--markdown", str(document)])
  text = document.read_text()
  assert "pending" not in text and text.endswith("tail\n")
  assert "| SoundStorm training, paper size | >= 40% MFU | 30.3% at batch 8" in text
  assert "| no |" in text and "| soundstorm | 32 | 1500 | out of memory |" in text
  with pytest.raises(ValueError, match="BEGIN cpu-tiny:train"):
    bench.main(["--from_json", str(saved), "--markdown", str(document),
                "--section", "cpu-tiny:train"])


def test_batch_must_split_over_the_mesh(tmp_path):
  with pytest.raises(ValueError, match="not divisible by the mesh's 2 batch shards"):
    bench.main(["--size", "tiny", "--model", "coarse", "--batch", "3", "--mesh", "2,1,1",
                "--out_dir", str(tmp_path)])
