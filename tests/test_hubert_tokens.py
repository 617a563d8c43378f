"""HuBERT semantic tokens end to end: k-means fitted on the fixture model's
features (fit_kmeans), then the tokenization job writing 50 Hz token shards."""
import pathlib
import types

import numpy as np
import pytest
import soundfile as sf

from soundlm.io import folder, shards, tf_env
from soundlm.io.token_space import TokenSpace
from soundlm.semantic import fit_kmeans
from soundlm.semantic.api import SemanticTokenizer
from soundlm.soundstorm.model import SoundStormConfig

HUBERT = pathlib.Path(__file__).parent / "fixtures" / "hubert" / "base"
SECONDS = (1.0, 1.37, 0.61)  # train clips; none a whole number of 20 ms frames


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """train/ holds three speech-like 16 kHz clips, validation/ one."""
  root = tmp_path_factory.mktemp("hubert_audio")
  rng = np.random.default_rng(1)
  for i, (split, seconds) in enumerate([("train", s) for s in SECONDS] + [("validation", 0.5)]):
    t = np.arange(int(seconds * 16_000 + 7 * i)) / 16_000
    wav = 0.3 * np.sin(2 * np.pi * (140 + 60 * i) * t * (1 + 0.4 * t)) * (1 + np.sin(8 * t))
    (root / split).mkdir(exist_ok=True)
    sf.write(root / split / f"clip{i}.flac", 0.5 * wav + 0.02 * rng.standard_normal(t.size),
             16_000)
  return root


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp("kmeans") / "kmeans.npz"
  kmeans = fit_kmeans.main([f"--hf_dir={HUBERT}", "--layer=1", "--num_clusters=6",
                            "--num_iters=3", "--window_seconds=0.5",
                            f"--corpus=folder:{corpus}", f"--out={out}"])
  assert (kmeans.num_clusters, kmeans.dim, kmeans.layer) == (6, 32, 1)
  return SemanticTokenizer.from_hf(HUBERT, out)


@pytest.fixture(scope="module")
def job(corpus, tokenizer, tmp_path_factory):
  from soundlm.codec.api import Codec
  from soundlm.data import tokenize

  codec = Codec.random("tiny")
  builder = folder.prepared(folder.folder_builder(
      corpus, data_dir=str(tmp_path_factory.mktemp("tfds"))))
  out = str(tmp_path_factory.mktemp("tokens"))
  manifest = tokenize.run(builder, out, codec, tokenizer, tokenize.JobConfig(
      split="train", batch_size=4, bucket_seconds=2.0, progress=False))
  return codec, out, manifest


def test_kmeans_file_records_the_hubert_model(tokenizer):
  assert tokenizer.kmeans.model["source"] == f"hf:{HUBERT}"
  assert (tokenizer.frame_rate, tokenizer.samples_per_token) == (50.0, 320)


def test_tokenization_job_writes_50_hz_semantic_tokens(corpus, tokenizer, job):
  codec, out, manifest = job
  spec = shards.spec_of(manifest)
  assert (spec.semantic_frame_rate, spec.codec_frame_rate, spec.frames_per_semantic) == (
      50.0, 50.0, 1)
  assert spec.semantic_vocab == 6 and manifest["splits"]["train"]["num_examples"] == 3
  tf = tf_env.tf()
  records = tf.data.TFRecordDataset(shards.shard_files(out, "train")).map(shards.parse_fn())
  records = {r["id"].decode().split("/")[-1]: r for r in records.as_numpy_iterator()}
  wavs = [sf.read(corpus / "train" / f"clip{i}.flac", dtype="float32")[0]
          for i in range(len(SECONDS))]
  # The job pads the clips to its 2 s bucket in a batch of 4; padded otherwise
  # (to the longest clip, a batch of 3) they get the same tokens.
  lengths = np.array([w.size for w in wavs])
  batch = np.zeros((len(wavs), lengths.max()), np.float32)
  for i, wav in enumerate(wavs):
    batch[i, :wav.size] = wav
  tokens = np.asarray(tokenizer.tokenize(batch, lengths=lengths))
  for i, wav in enumerate(wavs):
    record, frames = records[f"clip{i}"], wav.size // 320
    assert record["semantic"].shape == (frames,)
    assert record["codes"].shape == (frames, codec.num_levels)
    np.testing.assert_array_equal(record["semantic"], tokens[i, :frames])


def test_token_space_ratio_follows_the_semantic_rate(tokenizer):
  encodec_like = types.SimpleNamespace(sample_rate=24_000, frame_rate=75.0, num_levels=8,
                                       codebook_size=1024)
  with pytest.raises(ValueError, match=r"codec frame rate 75.0 Hz is not a whole multiple of "
                                       r"the semantic frame rate 50.0 Hz"):
    TokenSpace.of(encodec_like, tokenizer)
  codec_50_hz = types.SimpleNamespace(**{**vars(encodec_like), "frame_rate": 50.0})
  space = TokenSpace.of(codec_50_hz, tokenizer)
  sizes = dict(semantic_vocab=6, codebook_size=1024, num_levels=8)
  space.check_compatible(**SoundStormConfig(frames_per_semantic_token=1, **sizes).token_needs())
  with pytest.raises(ValueError, match="frames_per_semantic=2 but .* have 1"):
    space.check_compatible(**SoundStormConfig(frames_per_semantic_token=2, **sizes).token_needs())
