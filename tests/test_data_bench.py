"""Smoke test of the input benchmark (token pipelines only; speed is not asserted)."""
from soundlm.bench import input as bench_input


def test_input_benchmark_runs_and_reports(tmp_path):
  rows = bench_input.run("tiny", batches=2, warmup=0, restore_at=3,
                         data_dir=str(tmp_path / "tfds"), tokens=None, work=str(tmp_path),
                         pipelines=("soundstorm", "audiolm_coarse"))
  assert [r["pipeline"] for r in rows] == ["soundstorm", "audiolm_coarse"]
  for row in rows:
    assert row["examples_per_s"] > 0 and row["restore_position"] == 3
  assert rows[0]["shapes"]["codes"] == [8, 100, 4]
