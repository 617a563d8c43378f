"""Smoke run of the runtime figure at the tiny size: one short length (one
coarse window of the tiny stage, 0.32 s), one repeat."""
import json

import pytest

from soundlm.bench import runtime as bench
from soundlm.soundstorm import schedule as schedule_lib


def test_tiny_runtime_writes_consistent_report_table_and_plot(tmp_path):
  out = tmp_path / "out"
  bench.main(["--size", "tiny", "--seconds", "0.32", "--repeats", "1", "--out_dir", str(out)])
  report = json.loads((out / "runtime.json").read_text())
  assert report["benchmark"] == "runtime" and report["size"] == "tiny"
  assert report["command"].startswith("python -m soundlm.bench.runtime --size tiny")
  with pytest.raises(ValueError, match="whole semantic frames"):
    bench.main(["--size", "tiny", "--seconds", "0.3", "--out_dir", str(tmp_path)])
  assert report["matmul_tflops"] > 0 and report["environment"]["jax_version"]
  (row,) = report["results"]
  assert row["seconds"] == 0.32 and row["frames"] == 16 and row["batch"] == 1
  for name in bench.COMPONENTS:
    result = row[name]
    assert result["median_s"] > 0 and len(result["times_s"]) == 1, name
    assert result["compile_s"] > 0 and result["flops"] > 0, name
    assert result["achieved_tflops"] == pytest.approx(
        result["flops"] / result["median_s"] / 1e12), name
  storm = row["soundstorm"]
  schedule = schedule_lib.paper_schedule(4, 16)
  assert storm["schedule"] == list(schedule) == [16, 1, 1, 1]
  assert storm["forward_passes"] == sum(schedule)
  assert storm["flops"] == pytest.approx(storm["flops_per_pass"] * sum(schedule))
  assert row["audiolm_s"] == pytest.approx(row["coarse"]["median_s"] + row["fine"]["median_s"])
  assert row["ar_over_soundstorm"] == pytest.approx(row["audiolm_s"] / storm["median_s"])
  for stage in ("coarse", "fine"):
    result = row[stage]
    assert result["calls"] == len(result["windows"]) >= 1
    assert result["sequential_steps"] == sum(w["steps"] for w in result["windows"])
    assert result["ms_per_step"] == pytest.approx(
        1e3 * result["median_s"] / result["sequential_steps"])
  assert (out / "runtime.png").stat().st_size > 0
  assert "| 0.32 |" in (out / "runtime.md").read_text()

  # The same report regenerates a document's block without measuring again.
  document = tmp_path / "BENCHMARKS.md"
  document.write_text("<!-- BEGIN cpu-tiny:runtime -->\nold\n<!-- END cpu-tiny:runtime -->\n")
  bench.main(["--from_json", str(out / "runtime.json"), "--markdown", str(document)])
  text = document.read_text()
  assert "old" not in text and (out / "runtime.md").read_text().strip() in text
