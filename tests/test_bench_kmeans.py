"""The k-means benchmark's report is consistent with itself."""
import json

import pytest

from soundlm.bench import kmeans


def test_tiny_kmeans_benchmark_reports_consistent_rates(tmp_path, capsys):
  assert kmeans.main(["--size=tiny", "--iters=3", f"--out_dir={tmp_path}"]) == 0
  report = json.loads((tmp_path / "kmeans.json").read_text())
  assert report["rows"] == 20_000
  assert report["rows_per_s"] * report["pass_s"] == pytest.approx(20_000)
  assert report["rows_bytes"] == 20_000 * 64 * 4 <= report["peak_rss_bytes"]
  assert report["first_pass_s"] + report["pass_s"] <= report["total_s"]
  assert report["inertia"][1] <= report["inertia"][0]
  assert "| 20000 | 64 | 64 |" in capsys.readouterr().out
