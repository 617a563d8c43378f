"""Front-end frame rates, Kaldi fbank parity with the reference extractor, span masking."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.semantic import features, masking
from soundlm.semantic.config import W2vBertConfig, read_config
from soundlm.semantic.encoder import W2vBertEncoder, input_features

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "w2v_bert"


def test_fbank_matches_seamless_m4t_feature_extractor():
  ref = np.load(FIXTURE / "reference.npz")
  ours = np.asarray(features.seamless_features(jnp.asarray(ref["waveform"][None])))[0]
  assert ours.shape == ref["input_features"].shape
  np.testing.assert_allclose(ours, ref["input_features"], atol=2e-4)


@pytest.mark.parametrize("frontend", ["conv", "stacked"])
def test_frontends_give_25_hz_tokens_for_16_khz_input(frontend):
  block = "conformer" if frontend == "conv" else "w2v_bert_2"
  position = "rope" if frontend == "conv" else "relative_key"
  config = W2vBertConfig(frontend=frontend, block=block, position=position, width=16,
                         num_heads=2, mlp_dim=16, conv_channels=4, conv_kernel_size=3,
                         num_contrastive_layers=1, num_mlm_layers=0, num_mel_bins=16)
  encoder = W2vBertEncoder(config)
  params = jax.jit(encoder.init)(jax.random.key(0),
                                 input_features(jnp.zeros((1, 640)), config))
  for seconds, extra in ((1, 0), (2, 639)):
    wav = jnp.zeros((2, seconds * 16_000 + extra))
    hidden = jax.eval_shape(lambda w: encoder.apply(params, input_features(w, config))[0], wav)
    frames = hidden[-1].shape[1]
    # 25 frames per second of input, N // 640 in all (50 Hz stacks: twice that).
    assert frames * 25 // config.model_frame_rate == wav.shape[1] // 640 == seconds * 25


def test_token_aligned_fbank_frames_are_centred_on_token_spans():
  # A click at the centre of token 3's span lands in fbank frames 4*3 .. 4*3+3.
  wav = np.zeros((1, 640 * 8), np.float32)
  wav[0, 640 * 3 + 320] = 0.9
  mel = np.asarray(features.log_mel(jnp.asarray(wav), 80, features.TOKEN_PAD))[0]
  loud = np.flatnonzero(mel.max(axis=1) > mel.min() + 5)
  assert set(loud) <= set(range(12, 16)) and loud.size >= 2
  assert features.num_fbank_frames(wav.shape[1], features.TOKEN_PAD) == wav.shape[1] // 160


def test_span_masking_hits_the_configured_ratio():
  mask = np.asarray(masking.span_mask(jax.random.key(0), 64, 2000, 0.065, 10))
  expected = masking.expected_mask_ratio(0.065, 10)
  assert abs(expected - 0.4890) < 1e-3
  # Frames before the first full span window can only be reached by fewer spans.
  assert mask[:, 10:].mean() == pytest.approx(expected, abs=0.01)
  # Every masked run is a union of whole spans: at least 10 frames unless cut by the end.
  for row in mask[:8]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
    starts, ends = edges[::2], edges[1::2]
    assert np.all((ends - starts >= 10) | (ends == row.size))


def test_bad_masking_settings_raise():
  with pytest.raises(ValueError, match="mask_prob"):
    masking.span_mask(jax.random.key(0), 1, 10, 1.5, 10)
  with pytest.raises(ValueError, match="span_length"):
    masking.span_mask(jax.random.key(0), 1, 10, 0.1, 0)


def test_named_configs_read_without_touching_gin():
  import gin
  before = gin.config_str()
  tiny, paper = read_config("tiny"), read_config("paper")
  assert gin.config_str() == before
  assert (tiny.width, tiny.num_layers) == (32, 2)
  assert (paper.width, paper.num_layers, paper.codebook_size) == (1024, 24, 1024)
  with pytest.raises(FileNotFoundError, match="no gin file"):
    read_config("no_such_size")
