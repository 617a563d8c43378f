"""The codec suite and `soundlm eval`: every level row and every baseline, each
row the figures of that level's own decode, clear errors on bad input."""
import json
import sys

# ViSQOL without its numba kernels (a ~30 s compile in a fresh environment):
# the same figures from its NumPy path, quick on these short clips.
sys.modules.setdefault("numba", None)

import gin  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from soundlm import configs, evaluate, models  # noqa: E402
from soundlm.codec.api import Codec  # noqa: E402
from soundlm.evaluation import codec as codec_suite  # noqa: E402
from soundlm.evaluation import metrics  # noqa: E402
from soundlm.io import corpus  # noqa: E402
from tests.test_models import tiny_configs, write_workdir  # noqa: E402

SECONDS = (1.5, 1.2)  # two short held-out clips of different lengths


def _main(argv) -> int:
  gin.clear_config()  # each call parses its own gin flags
  return evaluate.main([*argv, "--no_progress"])


@pytest.fixture(scope="module")
def codec_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("codec")
  write_workdir(workdir, models.random(tiny_configs()["soundstream"], seed=1))
  return str(workdir)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("clips")
  for clip, seconds in zip(corpus.load_builtin("validation", "speech", max_clips=2), SECONDS):
    sf.write(folder / f"{clip.id}.wav", clip.waveform[:int(seconds * 16000)], 16000)
  return str(folder)


@pytest.fixture(scope="module")
def report(codec_workdir, clips_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval")
  assert _main([f"--codec={codec_workdir}", f"--clips_dir={clips_dir}", "--levels=1,8",
                f"--out={out}"]) == 0
  with open(out / "eval.json") as f:
    return json.load(f)["results"]["codec"], (out / "eval.md").read_text()


def test_every_level_row_and_every_baseline(report):
  result, markdown = report
  names = [row["name"] for row in result["rows"]]
  assert names == ["1 level", "8 levels", "silence", "noise", "delayed"]
  # The tiny codec: 64 codes (6 bits) per level at 50 Hz.
  assert [row["kbps"] for row in result["rows"]] == [0.3, 2.4, 0.0, 0.0, None]
  for row in result["rows"]:
    assert set(row["figures"]) == set(metrics.METRICS)
    assert all(len(v) == 2 for v in row["per_clip"].values())
    assert f"| {row['name'] if row['kind'] == 'codec' else 'baseline: ' + row['name']} |" in (
        markdown)
  assert result["delay_samples"] == 320 and not result["resampled"]


def test_baselines_are_ordered_as_their_content_says(report):
  rows = {row["name"]: row["figures"] for row in report[0]["rows"]}
  delayed, noise, silence = rows["delayed"], rows["noise"], rows["silence"]
  for name in ("visqol", "pesq", "stoi"):
    assert delayed[name]["mean"] > noise[name]["mean"], name
  assert delayed["mel_distance"]["mean"] < noise["mel_distance"]["mean"]
  assert noise["stoi"]["mean"] > silence["stoi"]["mean"]
  for name in ("visqol", "pesq", "si_snr"):  # undefined for silence, and counted
    assert silence[name]["mean"] is None and silence[name]["undefined"] == 2
  # A random codec carries no content: no better than noise on ViSQOL.
  assert rows["8 levels"]["visqol"]["mean"] < delayed["visqol"]["mean"]


def test_each_row_scores_that_levels_own_decode(report, codec_workdir, clips_dir):
  """Batched, padded decodes give each clip the figures of decoding it alone."""
  result, _ = report
  codec = Codec.load(codec_workdir)
  clip = evaluate.load_clips(clips_dir, None)[1]
  for row in result["rows"][:2]:
    codes = codec.encode(clip.waveform[None])[..., :row["levels"]]
    alone = np.asarray(codec.decode(codes))[0, :clip.waveform.size]
    for name in ("si_snr", "mel_distance"):
      expected = metrics.FUNCTIONS[name](clip.waveform, alone)
      assert row["per_clip"][name][1] == pytest.approx(expected, rel=1e-3, abs=1e-3), name


class _IdentityCodec:
  """A 24 kHz 'codec' whose decode returns what it was given: the suite's
  resampling round trip must then keep the clip nearly intact."""
  sample_rate, hop_length, frame_rate, num_levels, codebook_size = 24000, 480, 50.0, 2, 4
  model = None

  def encode(self, wav, sample_rate):
    assert sample_rate == 24000
    self._wav = np.asarray(wav)
    return np.zeros((wav.shape[0], wav.shape[1] // self.hop_length, 2), np.int32)

  def decode(self, codes):
    return self._wav


def test_a_codec_at_another_rate_gets_resampled_clips(clips_dir):
  clips = evaluate.load_clips(clips_dir, None)
  result = codec_suite.evaluate_codec(_IdentityCodec(), clips, levels=[2],
                                      metrics=["si_snr", "mel_distance"], baselines=(),
                                      progress=False)
  row = result["rows"][0]
  assert result["resampled"] and result["delay_samples"] == 320
  assert row["figures"]["si_snr"]["mean"] > 25.0 and row["kbps"] == pytest.approx(0.2)
  assert row["figures"]["mel_distance"]["mean"] < 0.2


def _error(argv, capsys) -> str:
  with pytest.raises(SystemExit) as exit_info:
    _main(argv)
  assert exit_info.value.code == 2
  return capsys.readouterr().err


def test_bad_input_is_a_clear_error(codec_workdir, clips_dir, tmp_path, capsys):
  assert "work dir /nonexistent/codec does not exist" in _error(
      ["--codec=/nonexistent/codec", f"--out={tmp_path}"], capsys)
  # The family check reads model.json only: no checkpoint needed.
  soundstorm, w2v_bert = str(tmp_path / "soundstorm"), str(tmp_path / "w2v_bert")
  configs.write(soundstorm, tiny_configs()["soundstorm"])
  configs.write(w2v_bert, tiny_configs()["w2v_bert"])
  assert "holds a 'soundstorm' model, not a 'soundstream' model" in _error(
      [f"--codec={soundstorm}", f"--out={tmp_path}"], capsys)
  slow = tmp_path / "8k"
  slow.mkdir()
  sf.write(slow / "a.wav", np.sin(np.arange(8000) / 5.0).astype(np.float32), 8000)
  message = _error([f"--codec={codec_workdir}", f"--clips_dir={slow}", f"--out={tmp_path}"],
                   capsys)
  assert "a.wav" in message and "8000" in message
  assert "1..8" in _error([f"--codec={codec_workdir}", f"--clips_dir={clips_dir}",
                           "--levels=0,9", f"--out={tmp_path}"], capsys)
  assert "choose among" in _error([f"--codec={codec_workdir}", "--metrics=bleu",
                                   f"--out={tmp_path}"], capsys)
  assert "nothing to evaluate" in _error([f"--out={tmp_path}"], capsys)
  assert "--coarse_stage" in _error([f"--codec={codec_workdir}", "--suite=generation",
                                     f"--out={tmp_path}"], capsys)
  assert "needs token shards" in _error([f"--soundstorm={soundstorm}", f"--out={tmp_path}"],
                                        capsys)
  assert "needs its k-means file" in _error([f"--semantic={w2v_bert}", f"--out={tmp_path}"],
                                            capsys)
