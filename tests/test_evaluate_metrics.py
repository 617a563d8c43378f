"""The audio quality figures of soundlm.evaluation.metrics rank outputs as they
should: the reference itself best, noise worst, monotone in added noise."""
import sys

# ViSQOL's numba kernels take ~30 s to compile on first use in a fresh
# environment; without numba, visqol-python runs its NumPy path (the same
# figures), quick on these short clips. Only ViSQOL imports numba.
sys.modules.setdefault("numba", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from soundlm.evaluation import baselines, metrics  # noqa: E402
from soundlm.io import corpus  # noqa: E402


@pytest.fixture(scope="module")
def reference():
  """1.5 s of held-out speech."""
  return corpus.load_builtin("validation", "speech", max_clips=1)[0].waveform[:24000]


def _with_noise(wav, snr_db, seed=0):
  noise = np.random.default_rng(seed).standard_normal(wav.size).astype(np.float32)
  scale = np.sqrt(np.mean(wav ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
  return wav + scale * noise


def test_the_reference_itself_scores_best(reference):
  figures = metrics.score(reference, reference)
  assert figures["visqol"] > 4.9
  assert figures["pesq"] > 4.5
  assert figures["stoi"] > 0.99
  assert figures["si_snr"] > 50.0
  assert figures["mel_distance"] == pytest.approx(0.0, abs=1e-6)


def test_noise_scores_worse_than_the_delayed_and_the_clean_input(reference):
  rng = np.random.default_rng(0)
  clean = metrics.score(reference, _with_noise(reference, 30.0))
  delayed = metrics.score(reference, baselines.delayed(reference, 320))
  noise = metrics.score(reference, baselines.noise(reference, rng))
  for name in ("visqol", "pesq", "stoi"):
    assert noise[name] < delayed[name] and noise[name] < clean[name], (name, noise, delayed)
  assert noise["mel_distance"] > delayed["mel_distance"]
  assert noise["mel_distance"] > clean["mel_distance"]
  # One frame late: aligning metrics barely notice, the waveform metric does.
  assert delayed["visqol"] > 4.5 and delayed["si_snr"] < 0.0 < clean["si_snr"]


def test_every_figure_gets_worse_as_noise_is_added(reference):
  snrs = (30.0, 15.0, 5.0, -5.0)
  rows = [metrics.score(reference, _with_noise(reference, snr)) for snr in snrs]
  for name in metrics.METRICS:
    values = [row[name] for row in rows]
    if metrics.HIGHER_IS_BETTER[name]:
      assert all(a > b for a, b in zip(values, values[1:])), (name, values)
    else:
      assert all(a < b for a, b in zip(values, values[1:])), (name, values)
  assert rows[0]["si_snr"] == pytest.approx(30.0, abs=0.5)


def test_a_silent_estimate_has_no_visqol_pesq_or_si_snr(reference):
  figures = metrics.score(reference, baselines.silence(reference))
  assert all(np.isnan(figures[name]) for name in ("visqol", "pesq", "si_snr"))
  assert figures["stoi"] == pytest.approx(0.0, abs=1e-6)
  assert np.isfinite(figures["mel_distance"])


def test_bad_pairs_and_metric_names_are_refused(reference):
  with pytest.raises(ValueError, match="same length"):
    metrics.score(reference, reference[:-1])
  with pytest.raises(ValueError, match="reference is silent"):
    metrics.score(np.zeros(1000, np.float32), reference[:1000])
  with pytest.raises(ValueError, match="NaN"):
    metrics.score(reference, np.full_like(reference, np.nan))
  with pytest.raises(ValueError, match="choose among"):
    metrics.score(reference, reference, ["visqol", "bleu"])


def test_a_missing_metric_package_names_the_extra(reference, monkeypatch):
  monkeypatch.setitem(sys.modules, "pystoi", None)
  with pytest.raises(ImportError, match=r"soundlm\[eval\]"):
    metrics.score(reference, reference, ["stoi"])
  assert set(metrics.score(reference, reference, ["si_snr"])) == {"si_snr"}
