"""The tokenization job on the built-in corpus with tiny random models."""
import json
import os
import types

import numpy as np
import pytest
import soundfile as sf

from soundlm.data import tokenize
from soundlm.io import corpus, folder, shards, sources, tf_env

CONFIG = tokenize.JobConfig(split="validation", examples_per_shard=4, bucket_seconds=8.0,
                            progress=False)


@pytest.fixture(scope="module")
def models():
  from soundlm.codec.api import Codec
  from soundlm.semantic.api import SemanticTokenizer

  return Codec.random("tiny"), SemanticTokenizer.random("tiny")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def speech(data_dir):
  return sources.audio_builder("builtin:speech", data_dir)


@pytest.fixture(scope="module")
def complete(models, speech, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("complete"))
  return out, tokenize.run(speech, out, *models, CONFIG)


def _records(directory, split="validation"):
  tf = tf_env.tf()
  ds = tf.data.TFRecordDataset(shards.shard_files(directory, split)).map(shards.parse_fn())
  return list(ds.as_numpy_iterator())


def test_shards_match_the_audio_durations(models, complete):
  codec, semantic = models
  out, manifest = complete
  clips = {c.id: c for c in corpus.load_builtin("validation", "speech")}
  split = manifest["splits"]["validation"]
  assert manifest["complete"] and split["num_shards"] == 3
  assert split["num_examples"] == len(clips) and not split["skipped"]
  assert manifest["spec"]["num_levels"] == codec.num_levels
  records = _records(out)
  assert len(records) == len(clips)
  for r in records:
    clip = clips[r["id"].decode().split("/")[-1]]
    frames = clip.waveform.size // 640  # whole 25 Hz frames of the clip
    assert r["semantic"].shape == (frames,) and r["codes"].shape == (2 * frames, codec.num_levels)
    assert r["duration"] == pytest.approx(frames / 25.0)
    assert r["speaker"].decode() == clip.speaker and r["text"].decode() == clip.text
    assert 0 <= r["semantic"].min() and r["semantic"].max() < semantic.vocab_size
    assert 0 <= r["codes"].min() and r["codes"].max() < codec.codebook_size


def test_padded_clips_get_the_semantic_tokens_they_get_alone(models, complete):
  _, semantic = models
  records = {r["id"].decode().split("/")[-1]: r["semantic"] for r in _records(complete[0])}
  clips = sorted(corpus.load_builtin("validation", "speech"), key=lambda c: c.waveform.size)
  for clip in (clips[0], clips[-1]):  # 8 s buckets: both are padded
    alone = np.asarray(semantic.tokenize(clip.waveform[None]))[0]
    np.testing.assert_array_equal(records[clip.id], alone)


def test_interrupted_job_resumes_to_the_same_shards(models, speech, complete, tmp_path):
  out, manifest = complete
  partial = tokenize.run(speech, str(tmp_path), *models,
                         tokenize.JobConfig(**{**CONFIG.__dict__, "max_shards": 1}))
  assert partial == {"complete": False, "done_shards": 1, "num_shards": 3}
  assert not os.path.exists(tmp_path / shards.MANIFEST)
  # A write killed midway leaves only a temporary file, which the restart replaces.
  (tmp_path / (shards.shard_name("validation", 1, 3) + ".tmp")).write_bytes(b"half a shard")
  resumed = tokenize.run(speech, str(tmp_path), *models, CONFIG)
  assert resumed == manifest
  names = sorted(n for n in os.listdir(out))
  assert sorted(os.listdir(tmp_path)) == names
  for name in names:
    assert (tmp_path / name).read_bytes() == open(os.path.join(out, name), "rb").read(), name


def test_shards_of_another_config_are_refused(models, speech, complete):
  out, _ = complete
  with pytest.raises(ValueError, match="existing shards were made with"):
    tokenize.run(speech, out, *models, tokenize.JobConfig(**{**CONFIG.__dict__,
                                                             "num_levels": 2}))


@pytest.fixture(scope="module")
def short_clip_builder(data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("short")
  clip = corpus.load_builtin("validation", "speech", max_clips=1)[0]
  sf.write(root / "ok.flac", clip.waveform, 16000)
  sf.write(root / "tiny.flac", clip.waveform[:300], 16000)
  return folder.prepared(folder.folder_builder(root, data_dir=data_dir,
                                               validation_fraction=0.0))


def test_too_short_clips_raise_or_are_skipped_and_counted(models, short_clip_builder,
                                                          tmp_path):
  config = tokenize.JobConfig(split="train", bucket_seconds=8.0, progress=False)
  with pytest.raises(tokenize.ClipError, match="tiny: 300 samples, shorter than one"):
    tokenize.run(short_clip_builder, str(tmp_path / "a"), *models, config)
  manifest = tokenize.run(short_clip_builder, str(tmp_path / "b"), *models,
                          tokenize.JobConfig(**{**config.__dict__, "on_error": "skip"}))
  split = manifest["splits"]["train"]
  assert split["num_examples"] == 1 and [s[0] for s in split["skipped"]] == ["tiny"]
  with open(tmp_path / "b" / shards.MANIFEST) as f:
    assert json.load(f)["splits"]["train"]["skipped"] == split["skipped"]


def test_wrong_sample_rate_is_refused(models, data_dir, tmp_path):
  sf.write(tmp_path / "a.wav", np.zeros(22050, np.float32), 22050)
  builder = folder.prepared(folder.folder_builder(
      tmp_path, data_dir=data_dir, sample_rate=22050, validation_fraction=0.0))
  with pytest.raises(ValueError, match="22050 Hz, the codec expects 16000 Hz"):
    tokenize.run(builder, str(tmp_path / "out"), *models,
                 tokenize.JobConfig(split="train", progress=False))


def test_main_joins_jax_distributed_unless_the_host_share_is_given(data_dir, tmp_path,
                                                                   monkeypatch):
  from soundlm import partitioning

  calls = []
  monkeypatch.setattr(partitioning, "initialize_distributed",
                      lambda *args, **kwargs: calls.append(True))
  # Shapes only: no shard is tokenized (--max_shards=0).
  codec = types.SimpleNamespace(num_levels=2, sample_rate=16000, frame_rate=50.0,
                                codebook_size=16)
  semantic = types.SimpleNamespace(sample_rate=16000, frame_rate=25.0, vocab_size=8)
  monkeypatch.setattr(tokenize, "load_models", lambda *_: (codec, semantic))
  sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
  args = [f"--source=folder:{tmp_path}", "--split=train", f"--data_dir={data_dir}",
          f"--out={tmp_path / 'out'}", "--codec=tiny", "--semantic=tiny", "--max_shards=0",
          "--no_progress"]
  tokenize.main(args)
  assert calls == [True]
  tokenize.main(args + ["--host_index=1", "--num_hosts=2"])
  assert calls == [True]
  with pytest.raises(ValueError, match="give both"):
    tokenize.main(args + ["--host_index=1"])
