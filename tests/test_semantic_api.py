"""SemanticTokenizer: shapes, batching, padding, construction paths, k-means
fingerprints and bad input."""
import dataclasses
import pathlib
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from soundlm.semantic.api import PAD_TOKEN, SemanticEmbedder, SemanticTokenizer
from soundlm.semantic.kmeans import KMeans, fit_kmeans

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "w2v_bert"


@pytest.fixture(scope="module")
def tokenizer():
  return SemanticTokenizer.random("tiny", seed=0)


def _speechlike(batch, samples, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(samples) / 16_000
  rows = [0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t * (1 + 0.3 * t))
          + 0.02 * rng.standard_normal(samples) for _ in range(batch)]
  return np.stack(rows).astype(np.float32)


def test_tokens_shape_range_and_batch_independence(tokenizer):
  assert (tokenizer.sample_rate, tokenizer.frame_rate, tokenizer.vocab_size) == (16000, 25, 64)
  wav = _speechlike(3, 16_000 + 700)
  tokens = tokenizer.tokenize(wav)
  assert tokens.shape == (3, 26) and tokens.dtype == jnp.int32
  tokens = np.asarray(tokens)
  assert tokens.min() >= 0 and tokens.max() < 64 and len(np.unique(tokens)) > 3
  np.testing.assert_array_equal(np.asarray(tokenizer.tokenize(wav[1:2])), tokens[1:2])


def _hf_tokenizer():
  """The 50 Hz w2v-BERT 2.0 fixture model with random centroids."""
  embedder = SemanticEmbedder.from_hf(FIXTURE / "relative_key", layer=3)
  flat = np.asarray(embedder.embed(_speechlike(2, 16_000))).reshape(-1, 32)
  centroids = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
  return SemanticTokenizer(embedder, KMeans(centroids, flat.mean(0), flat.std(0), 3,
                                            embedder.fingerprint()))


@pytest.mark.parametrize("model", ["tiny", "hf"])
def test_a_clip_gets_its_own_tokens_inside_a_padded_batch(tokenizer, model):
  tokenizer = tokenizer if model == "tiny" else _hf_tokenizer()
  sizes = (8_000 + 300, 19_200 + 17)
  clips = [_speechlike(1, n, seed=n)[0] for n in sizes]
  batch = np.zeros((2, 24_000), np.float32)  # 1 s and 0.3 s of trailing zeros
  for i, clip in enumerate(clips):
    batch[i, :clip.size] = clip
  tokens = np.asarray(tokenizer.tokenize(batch, lengths=np.array(sizes)))
  embeddings = np.asarray(tokenizer.embedder.embed(batch, lengths=np.array(sizes)))
  unmasked = np.asarray(tokenizer.tokenize(batch))
  for i, clip in enumerate(clips):
    frames = clip.size // 640
    alone = np.asarray(tokenizer.tokenize(clip[None]))[0]
    np.testing.assert_array_equal(tokens[i, :frames], alone)
    assert np.all(tokens[i, frames:] == PAD_TOKEN) and np.all(embeddings[i, frames:] == 0)
    # Without lengths the padding changes the clip's tokens.
    assert np.any(unmasked[i, :frames] != alone)


def test_bad_lengths_raise(tokenizer):
  wav = _speechlike(2, 1600)
  for lengths, pattern in ((np.array([1600]), "2 integer clip lengths"),
                           (np.array([1600.0, 800.0]), "integer"),
                           (np.array([1600, 639]), "640..1600"),
                           (np.array([1601, 800]), "640..1600")):
    with pytest.raises(ValueError, match=pattern):
      tokenizer.tokenize(wav, lengths=lengths)


def test_bad_waveforms_raise(tokenizer):
  wav = _speechlike(1, 1600)
  with pytest.raises(ValueError, match="sample_rate: expected 16000"):
    tokenizer.tokenize(wav, sample_rate=24_000)
  with pytest.raises(ValueError, match="multi-channel"):
    tokenizer.tokenize(np.stack([wav, wav], axis=-1))
  with pytest.raises(ValueError, match="shorter than one 25 Hz frame"):
    tokenizer.tokenize(wav[:, :639])
  with pytest.raises(ValueError, match=r"\[batch, samples\]"):
    tokenizer.tokenize(wav[0])
  with pytest.raises(ValueError, match="floating-point"):
    tokenizer.tokenize((wav * 3e4).astype(np.int16))


def test_audio_files_with_wrong_rate_or_channels_raise(tokenizer, tmp_path):
  wav = _speechlike(1, 3200)[0]
  sf.write(tmp_path / "ok.wav", wav, 16_000)
  assert tokenizer.tokenize_file(tmp_path / "ok.wav").shape == (5,)
  sf.write(tmp_path / "rate.wav", wav, 22_050)
  with pytest.raises(ValueError, match="22050"):
    tokenizer.tokenize_file(tmp_path / "rate.wav")
  sf.write(tmp_path / "stereo.wav", np.stack([wav, wav], axis=1), 16_000)
  with pytest.raises(ValueError, match="channel"):
    tokenizer.tokenize_file(tmp_path / "stereo.wav")


def test_mismatched_kmeans_and_layers_raise(tokenizer):
  wrong_dim = KMeans(np.zeros((4, 8), np.float32), np.zeros(8, np.float32),
                     np.ones(8, np.float32), 2)
  with pytest.raises(ValueError, match="dimension 8 .* width 32"):
    SemanticTokenizer(tokenizer.embedder, wrong_dim)
  with pytest.raises(ValueError, match="fitted on layer 2"):
    SemanticTokenizer(SemanticEmbedder(tokenizer.config, tokenizer.params, 1),
                      tokenizer.kmeans)
  with pytest.raises(ValueError, match=r"layer: expected a hidden-state index in 0..2"):
    SemanticEmbedder(tokenizer.config, tokenizer.params, 3)


def test_kmeans_fitted_under_another_model_config_is_refused(tokenizer):
  params, layer = tokenizer.params, tokenizer.layer
  other = dataclasses.replace(tokenizer.config, layer_norm_eps=1e-6)
  with pytest.raises(ValueError, match=r"config digest \w+\), not on this model: .*config "
                                       r"digest"):
    SemanticTokenizer(SemanticEmbedder(other, params, layer), tokenizer.kmeans)
  # Settings that only pre-training uses do not change the embeddings.
  tuned = dataclasses.replace(tokenizer.config, dropout_rate=0.3, codebook_size=8)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    SemanticTokenizer(SemanticEmbedder(tuned, params, layer), tokenizer.kmeans)


def test_kmeans_without_a_config_digest_is_checked_on_parameters_with_a_warning(tokenizer):
  older = {k: v for k, v in tokenizer.kmeans.model.items() if k != "config"}
  kmeans = dataclasses.replace(tokenizer.kmeans, model=older)
  with pytest.warns(UserWarning, match="records no config digest"):
    SemanticTokenizer(tokenizer.embedder, kmeans)
  other = dict(older, params="0" * 16)
  with pytest.raises(ValueError, match="not on this model"):
    SemanticTokenizer(tokenizer.embedder, dataclasses.replace(kmeans, model=other))


def test_tokenizer_from_hugging_face_folder(tmp_path):
  embedder = SemanticEmbedder.from_hf(FIXTURE / "relative_key", layer=3)
  wav = _speechlike(2, 16_000)
  embeddings = np.asarray(embedder.embed(wav))
  assert embeddings.shape == (2, 25, 32)  # 50 Hz frames averaged in pairs
  kmeans, _ = fit_kmeans(embeddings.reshape(-1, 32), 8, num_iters=3, layer=3,
                         model=embedder.fingerprint())
  kmeans.save(tmp_path / "kmeans.npz")
  tokenizer = SemanticTokenizer.from_hf(FIXTURE / "relative_key", tmp_path / "kmeans.npz")
  tokens = np.asarray(tokenizer.tokenize(wav))
  assert tokens.shape == (2, 25)
  np.testing.assert_array_equal(tokens, np.asarray(kmeans.assign(embeddings)))
