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
  # The extractor's own float32 output is about 6e-6 from its float64 algorithm.
  np.testing.assert_allclose(ours, ref["input_features"], rtol=0, atol=1e-5)


def _float64_reference(wav):
  """The SeamlessM4T extractor's algorithm, frame by frame in float64 numpy."""
  x = wav.astype(np.float64) * 32768.0
  window = np.hanning(400) ** 0.85
  filters = features.mel_filters(80).astype(np.float64)
  rows = []
  for start in range(0, x.size - 399, 160):
    frame = x[start:start + 400] - x[start:start + 400].mean()
    frame = np.concatenate([frame[:1] * 0.03, frame[1:] - 0.97 * frame[:-1]])
    power = np.abs(np.fft.rfft(frame * window, 512)) ** 2
    rows.append(np.log(np.maximum(power @ filters, features.MEL_FLOOR)))
  mel = np.asarray(rows)
  return (mel - mel.mean(0)) / np.sqrt(mel.var(0, ddof=1) + 1e-7)


def test_fbank_keeps_float64_precision_on_loud_clean_audio():
  # A loud harmonic glide below 3 kHz over faint noise: its top mel bands lie
  # 100 dB below its peak, where a float32 FFT is off by up to 4e-2.
  t = np.arange(24_000) / 16_000
  phase = 2 * np.pi * np.cumsum(110 + 40 * t) / 16_000
  wav = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 20))
  wav = (wav + 1e-6 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
  ours = np.asarray(features.normalized_log_mel(jnp.asarray(wav[None])))[0]
  np.testing.assert_allclose(ours, _float64_reference(wav), rtol=0, atol=2e-6)


def test_padded_clips_are_normalised_over_their_own_frames():
  rng = np.random.default_rng(0)
  clip = (0.3 * rng.standard_normal(8_000)).astype(np.float32)
  padded = np.zeros((2, 12_800), np.float32)
  padded[0, :clip.size] = clip
  alone = np.asarray(features.token_aligned_log_mel(jnp.asarray(clip[None])))[0]
  ours = np.asarray(features.token_aligned_log_mel(jnp.asarray(padded),
                                                   lengths=np.array([clip.size, 12_800])))
  frames = 4 * (clip.size // 640)
  np.testing.assert_allclose(ours[0, :frames], alone, rtol=0, atol=1e-5)
  assert np.all(ours[0, frames:] == 0)


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
