"""The linear-codec yardstick: more components and more levels code the
held-out speech better, and its bitrates are the codes' bits."""
import json

import numpy as np
import pytest

from soundlm.bench import linear_codec

ARGS = ["--components", "4", "16", "--levels", "2", "--codebook_size", "8",
        "--kmeans_rows", "2000", "--clips", "3"]


def test_more_components_and_levels_code_speech_better(tmp_path):
  assert linear_codec.main([*ARGS, f"--out_dir={tmp_path}"]) == 0
  report = json.loads((tmp_path / "linear_codec.json").read_text())
  rows = {(r["components"], r["levels"]): r for r in report["rows"]}
  assert rows.keys() == {(d, q) for d in (4, 16) for q in (None, 1, 2)}
  for levels in (None, 1, 2):
    assert rows[16, levels]["si_snr"] > rows[4, levels]["si_snr"]
    assert rows[16, levels]["mel_distance"] < rows[4, levels]["mel_distance"]
  for dims in (4, 16):
    assert rows[dims, 2]["si_snr"] > rows[dims, 1]["si_snr"]
    assert rows[dims, None]["si_snr"] > rows[dims, 2]["si_snr"]
  # 3 bits per level at 16000 / 320 = 50 frames per second.
  assert [rows[16, q]["kbps"] for q in (1, 2)] == pytest.approx([0.15, 0.30])
  assert report["held_out_clips"] == 3


def test_principal_components_are_orthonormal_and_ordered():
  rng = np.random.default_rng(0)
  frames = rng.standard_normal((500, 8)) * np.arange(8, 0, -1)
  basis = linear_codec.principal_components(frames)
  np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-10)
  variances = ((frames @ basis) ** 2).mean(0)
  assert np.all(np.diff(variances) <= 0)


def test_components_beyond_the_frame_are_refused(capsys):
  with pytest.raises(SystemExit):
    linear_codec.main(["--hop", "320", "--components", "400"])
  assert "--components must lie in 1..--hop (320), got [400]" in capsys.readouterr().err
