"""Smoke run of the codec speed benchmark at the tiny size."""
import json

import pytest

from soundlm.bench import codec as bench


def test_tiny_codec_bench_reports_consistent_real_time_factors(tmp_path):
  out = tmp_path / "out"
  bench.main(["--size", "tiny", "--seconds", "0.2", "--batch", "1", "2", "--repeats", "1",
              "--chunk_frames", "2", "--out_dir", str(out)])
  report = json.loads((out / "codec.json").read_text())
  assert report["benchmark"] == "codec" and report["sample_rate"] == 16000
  assert report["command"].startswith("python -m soundlm.bench.codec --size tiny")
  assert [(r["call"], r["batch"]) for r in report["results"]] == [
      ("encode", 1), ("decode", 1), ("encode", 2), ("decode", 2)]
  for row in report["results"]:
    assert row["frames"] == 10 and row["compile_s"] > 0 and row["flops"] > 0
    assert row["real_time_factor"] == pytest.approx(row["batch"] * 0.2 / row["median_s"])
    assert row["achieved_tflops"] == pytest.approx(row["flops"] / row["median_s"] / 1e12)
  # XLA counts twice the work for twice the batch.
  by_call = {(r["call"], r["batch"]): r["flops"] for r in report["results"]}
  assert by_call["decode", 2] == pytest.approx(2 * by_call["decode", 1], rel=0.01)
  assert [r["call"] for r in report["streaming"]] == ["stream_encode", "stream_decode"]
  for row in report["streaming"]:
    assert row["chunks"] == 5 and len(row["times_s"]) == 4  # The first push compiles.
    assert row["real_time_factor"] == pytest.approx(2 / 50 / row["median_s"])
  assert "| decode | 2 |" in (out / "codec.md").read_text()

  document = tmp_path / "BENCHMARKS.md"
  document.write_text("<!-- BEGIN cpu-tiny:codec -->\nold\n<!-- END cpu-tiny:codec -->\n")
  bench.main(["--from_json", str(out / "codec.json"), "--markdown", str(document)])
  assert "old" not in document.read_text() and "stream_decode" in document.read_text()


def test_codec_bench_refuses_a_stream_of_fewer_than_two_chunks(tmp_path):
  with pytest.raises(ValueError, match="chunk_frames 10"):
    bench.main(["--size", "tiny", "--seconds", "0.2", "--batch", "1", "--repeats", "1",
                "--chunk_frames", "10", "--out_dir", str(tmp_path)])
