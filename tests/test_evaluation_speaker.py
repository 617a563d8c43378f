"""Resemblyzer's voice encoder in JAX against the reference implementation
(tests/fixtures/speaker, written by scripts/make_speaker_fixture.py), and its
speaker similarities on the built-in corpus.

The weights come from the installed resemblyzer package (launch/env.sh installs
it without dependencies); without them these tests fail, they do not skip.
"""
import collections
import pathlib
import pickle

import numpy as np
import pytest

from soundlm.evaluation import speaker
from soundlm.io import corpus
from soundlm.io.audio import resample

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "speaker"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def encoder():
  return speaker.VoiceEncoder.load()


def _wav(reference, i):
  return reference[f"wav{i}"].astype(np.float32) / 32768


@pytest.mark.parametrize("name", ["tensors_zip.pt", "tensors_legacy.pt"])
def test_torch_checkpoints_read_without_torch(reference, name):
  tensors = speaker.read_torch_tensors(FIXTURE / name)
  assert tensors["step"] == 7
  got = {"transposed": tensors["transposed"], "nested_slice": tensors["nested"][0],
         "nested_half": tensors["nested"][1]["half"], "parameter": tensors["parameter"]}
  for key, array in got.items():
    want = reference[f"tensors_{key}"]
    assert array.dtype == want.dtype and array.shape == want.shape, key
    np.testing.assert_array_equal(array, want)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
  path = tmp_path / "evil.pt"
  path.write_bytes(pickle.dumps({"payload": print}))
  with pytest.raises(pickle.UnpicklingError, match="refusing builtins.print"):
    speaker.read_torch_tensors(path)


def test_mel_front_end_matches_librosa(reference):
  np.testing.assert_allclose(speaker.mel_filters(), reference["mel_filters"], atol=1e-8)
  wav = speaker.normalize_volume(_wav(reference, 0))
  end = (speaker.partial_starts(wav.size)[-1] + speaker.PARTIAL_FRAMES) * speaker.HOP
  mel = speaker.mel_spectrogram(np.pad(wav, (0, max(0, end - wav.size))))
  assert mel.shape == reference["mel0"].shape
  np.testing.assert_allclose(mel, reference["mel0"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_embeddings_match_resemblyzer(reference, encoder, i):
  """Clip 2 fills less than one partial and is quieter than -30 dBFS."""
  wav = _wav(reference, i)
  partials = encoder.embed_partials(speaker.utterance_partials(wav))
  assert partials.shape == reference[f"partials{i}"].shape
  np.testing.assert_allclose(partials, reference[f"partials{i}"], atol=TOLERANCE)
  embedding = encoder.embed_utterances([wav])[0]
  np.testing.assert_allclose(embedding, reference[f"embed{i}"], atol=TOLERANCE)
  assert abs(np.linalg.norm(embedding) - 1) < 1e-5


def test_partials_of_several_clips_batch_together(reference, encoder):
  wavs = [_wav(reference, i) for i in range(3)]
  small_batches = speaker.VoiceEncoder(encoder.params, batch_size=3)
  together = small_batches.embed_utterances(wavs)
  for i, wav in enumerate(wavs):
    np.testing.assert_allclose(together[i], reference[f"embed{i}"], atol=TOLERANCE)


def test_other_sample_rates_are_resampled(reference, encoder):
  wav = _wav(reference, 1)
  at_24khz = resample(wav, 16_000, 24_000)
  embedding = encoder.embed_utterances([at_24khz], sample_rate=24_000)[0]
  assert float(embedding @ reference["embed1"]) > 0.99


@pytest.mark.parametrize("wav, match", [
    (np.zeros(0, np.float32), "non-empty 1-D float"),
    (np.zeros((2, 100), np.float32), "non-empty 1-D float"),
    (np.zeros(100, np.int16), "non-empty 1-D float"),
    (np.full(100, np.nan, np.float32), "NaN"),
])
def test_bad_waveforms_are_refused(encoder, wav, match):
  with pytest.raises(ValueError, match=match):
    encoder.embed_utterances([np.ones(1600, np.float32), wav])


def test_missing_weights_say_how_to_install_them(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="do not exist"):
    speaker.VoiceEncoder.load(tmp_path / "missing.pt")
  monkeypatch.setattr(speaker.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps resemblyzer"):
    speaker.VoiceEncoder.load()


def test_same_speaker_clips_are_more_similar_on_the_builtin_corpus(encoder):
  """Each validation clip is matched with two training clips of every speaker."""
  by_speaker = collections.defaultdict(list)
  for clip in corpus.load_builtin("train", "speech"):
    by_speaker[clip.speaker].append(clip)
  validation = corpus.load_builtin("validation", "speech")
  assert len(by_speaker) >= 5 and {c.speaker for c in validation} <= set(by_speaker)
  speakers = sorted(by_speaker)
  train = [c for s in speakers for c in by_speaker[s][:2]]
  embeddings = encoder.embed_utterances([c.waveform for c in validation + train])
  similarity = embeddings[:len(validation)] @ embeddings[len(validation):].T
  same = (np.array([c.speaker for c in validation])[:, None]
          == np.array([c.speaker for c in train])[None, :])
  assert similarity[same].mean() > similarity[~same].mean() + 0.15
  per_speaker = similarity.reshape(len(validation), len(speakers), 2).mean(-1)
  identified = [speakers[j] for j in per_speaker.argmax(1)]
  correct = sum(s == c.speaker for s, c in zip(identified, validation))
  assert correct >= len(validation) - 1
