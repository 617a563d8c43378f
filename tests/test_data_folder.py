"""TFDS folder builder: files in, examples with their metadata out; bad files."""
import json

import numpy as np
import pytest
import soundfile as sf

from soundlm.io import audio, folder


def _write(path, n, rate=16000, channels=1, seed=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  wav = 0.2 * np.random.default_rng(seed).uniform(-1, 1, (n, channels) if channels > 1 else n)
  sf.write(path, wav, rate, subtype="PCM_16")
  return sf.read(path, dtype="float32")[0]


@pytest.fixture(scope="module")
def audio_tree(tmp_path_factory):
  """LibriSpeech-like speaker/chapter/file tree with transcripts and a JSON sidecar."""
  root = tmp_path_factory.mktemp("tree")
  waves = {}
  for i, (spk, n) in enumerate([("alice", 1600), ("alice", 2400), ("bob", 800), ("carol", 3200),
                                 ("bob", 1000), ("dave", 1200)]):
    rel = f"{spk}/ch1/utt{i}"
    waves[rel] = _write(root / (rel + ".flac"), n, seed=i)
    (root / (rel + ".txt")).write_text(f"sentence {i}\n")
  (root / "dave/ch1/utt5.json").write_text(json.dumps({"speaker": "david", "text": "override"}))
  return root, waves


@pytest.fixture(scope="module")
def built(audio_tree, tmp_path_factory):
  root, waves = audio_tree
  builder = folder.prepared(folder.folder_builder(
      root, data_dir=tmp_path_factory.mktemp("tfds"), speaker_dir_level=2,
      validation_fraction=0.5))
  examples = {}
  for split in folder.SPLITS:
    for ex in builder.as_dataset(split=split).as_numpy_iterator():
      examples[ex["id"].decode()] = (split, ex)
  return builder, examples


def test_folder_builder_yields_every_file_with_its_metadata(audio_tree, built):
  _, waves = audio_tree
  builder, examples = built
  assert set(examples) == set(waves)
  assert {s for s, _ in examples.values()} == {"train", "validation"}
  for rel, wav in waves.items():
    _, ex = examples[rel]
    np.testing.assert_allclose(folder.to_float(ex["audio"]), wav, atol=1 / 32768)
    assert ex["duration"] == pytest.approx(len(wav) / 16000)
    assert ex["speaker"].decode() == ("david" if rel.startswith("dave") else rel.split("/")[0])
    # A transcript file wins over the JSON text.
    assert ex["text"].decode() == f"sentence {rel[-1]}"
  assert builder.info.features["audio"].sample_rate == 16000


def test_split_subfolders_are_used_when_present(tmp_path):
  _write(tmp_path / "train" / "a.wav", 800)
  _write(tmp_path / "validation" / "b.wav", 800)
  files = folder.split_files(folder.FolderSettings(str(tmp_path)))
  assert files == {"train": ["train/a.wav"], "validation": ["validation/b.wav"]}


@pytest.fixture()
def bad_tree(tmp_path):
  _write(tmp_path / "good.wav", 1600)
  _write(tmp_path / "stereo.wav", 1600, channels=2)
  _write(tmp_path / "rate.wav", 2205, rate=22050)
  (tmp_path / "broken.flac").write_bytes(b"fLaC broken")
  return tmp_path


def test_bad_files_raise_by_default(bad_tree, tmp_path_factory):
  builder = folder.folder_builder(bad_tree, data_dir=tmp_path_factory.mktemp("tfds"),
                                  validation_fraction=0.0)
  with pytest.raises(audio.AudioFileError, match="broken.flac"):
    builder.download_and_prepare()


def test_bad_files_are_skipped_and_reported_when_allowed(bad_tree, tmp_path_factory):
  builder = folder.prepared(folder.folder_builder(
      bad_tree, data_dir=tmp_path_factory.mktemp("tfds"), validation_fraction=0.0,
      on_error="skip"))
  assert builder.info.splits["train"].num_examples == 1
  skipped = dict(folder.skipped_files(builder)["train"])
  assert set(skipped) == {"stereo.wav", "rate.wav", "broken.flac"}
  assert "expected 1 channel" in skipped["stereo.wav"]
  assert "22050" in skipped["rate.wav"]


def test_a_split_whose_files_are_all_skipped_is_an_error(tmp_path, tmp_path_factory):
  _write(tmp_path / "train" / "a.wav", 1600)
  _write(tmp_path / "validation" / "b.wav", 1600, channels=2)
  builder = folder.folder_builder(tmp_path, data_dir=tmp_path_factory.mktemp("tfds"),
                                  on_error="skip")
  with pytest.raises(ValueError, match=r"all 1 files of split 'validation' were skipped, "
                                       r"e.g. validation/b.wav: expected 1 channel"):
    builder.download_and_prepare()


def test_missing_root_is_refused_before_anything_is_built(tmp_path):
  with pytest.raises(ValueError, match="is not a directory"):
    folder.folder_builder(tmp_path / "missing", data_dir=tmp_path / "tfds")
  assert not (tmp_path / "tfds").exists()


def test_resample_and_downmix_settings_admit_those_files(bad_tree, tmp_path_factory):
  (bad_tree / "broken.flac").unlink()
  builder = folder.prepared(folder.folder_builder(
      bad_tree, data_dir=tmp_path_factory.mktemp("tfds"), validation_fraction=0.0,
      allow_resample=True, allow_downmix=True))
  lengths = sorted(int(ex["audio"].shape[0])
                   for ex in builder.as_dataset(split="train").as_numpy_iterator())
  assert lengths == [1600, 1600, 1600]


def test_settings_are_checked():
  with pytest.raises(ValueError, match="on_error"):
    folder.FolderSettings("/x", on_error="ignore")
  with pytest.raises(ValueError, match="validation_fraction"):
    folder.FolderSettings("/x", validation_fraction=1.0)


def test_a_folder_whose_files_change_is_built_again(tmp_path):
  root, data_dir = tmp_path / "audio", tmp_path / "tfds"
  _write(root / "a.flac", 800)
  first = folder.prepared(folder.folder_builder(root, data_dir=data_dir,
                                                validation_fraction=0.0))
  assert first.info.splits["train"].num_examples == 1
  _write(root / "b.flac", 800, seed=1)
  second = folder.prepared(folder.folder_builder(root, data_dir=data_dir,
                                                 validation_fraction=0.0))
  assert second.info.config_name != first.info.config_name
  assert second.info.splits["train"].num_examples == 2
