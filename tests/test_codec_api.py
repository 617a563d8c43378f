"""SoundStream model and Codec API: frame arithmetic, causality, shapes, streaming, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm import models
from soundlm.codec.api import Codec
from soundlm.codec.model import SoundStream, SoundStreamConfig


@pytest.fixture(scope="module")
def codec():
  return Codec.random("tiny", seed=0)


@pytest.fixture(scope="module")
def speech_like():
  """Two 0.31 s signals (not a whole number of frames): tones plus noise."""
  t = np.arange(4960) / 16000
  rng = np.random.default_rng(0)
  wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 530 * t)])
  return (wav + 0.05 * rng.normal(size=wav.shape)).astype(np.float32)


@pytest.mark.parametrize("config,rate,hop", [
    ("paper_16khz", 16000, 320), ("paper_24khz", 24000, 480), ("tiny", 16000, 320)])
def test_frame_rate_arithmetic(config, rate, hop):
  model = SoundStream(models.config_from_gin(SoundStreamConfig, "codec", config))
  assert (model.sample_rate, model.hop_length, model.frame_rate) == (rate, hop, 50.0)
  wav = jax.ShapeDtypeStruct((2, rate), jnp.float32)  # one second
  variables = jax.eval_shape(model.init, jax.random.key(0), wav)
  codes = jax.eval_shape(lambda v, w: model.apply(v, w, method="encode"), variables, wav)
  assert codes.shape == (2, 50, model.num_levels) and codes.dtype == jnp.int32
  out = jax.eval_shape(lambda v, c: model.apply(v, c, method="decode"), variables, codes)
  assert out.shape == (2, rate)
  if config.startswith("paper"):
    assert (model.num_levels, model.codebook_size, model.config.channels) == (12, 1024, 32)


def test_every_level_count_has_the_right_shapes(codec):
  wav = jax.ShapeDtypeStruct((3, 960), jnp.float32)
  for levels in range(1, codec.num_levels + 1):
    codes = jax.eval_shape(lambda v, w, n=levels: codec.model.apply(
        v, w, num_levels=n, method="encode"), codec.variables, wav)
    assert codes.shape == (3, 3, levels)
    out = jax.eval_shape(lambda v, c: codec.model.apply(v, c, method="decode"),
                         codec.variables, codes)
    assert out.shape == (3, 960)


def test_encode_decode_api(codec, speech_like):
  assert (codec.sample_rate, codec.frame_rate, codec.hop_length) == (16000, 50.0, 320)
  codes = codec.encode(speech_like)
  frames = -(-speech_like.shape[1] // 320)  # right-padded to whole frames
  assert codes.shape == (2, frames, codec.num_levels) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < codec.codebook_size
  coarse = codec.encode(speech_like, num_levels=2)
  np.testing.assert_array_equal(np.asarray(coarse), np.asarray(codes[..., :2]))
  wav = codec.decode(codes)
  assert wav.shape == (2, frames * 320) and wav.dtype == jnp.float32
  wav_coarse = codec.decode(coarse)
  assert wav_coarse.shape == wav.shape and not np.allclose(wav, wav_coarse)


def test_encoder_is_causal(codec, speech_like):
  n = 1000  # in frame 3
  embed = jax.jit(lambda w: codec.model.apply(codec.variables, w, method="embed"))
  wav = speech_like[:, :3200]
  before = embed(wav)
  after = embed(_changed(wav, n))
  np.testing.assert_array_equal(np.asarray(before[:, :n // 320]), np.asarray(after[:, :n // 320]))
  assert not np.allclose(before[:, n // 320], after[:, n // 320])


def _changed(wav, n):
  wav = wav.copy()
  wav[:, n:] += 0.5
  return wav


def test_decoder_is_causal(codec, speech_like):
  codes = np.asarray(codec.encode(speech_like))
  changed = codes.copy()
  changed[:, 6:] = (changed[:, 6:] + 1) % codec.codebook_size
  before, after = codec.decode(codes), codec.decode(changed)
  np.testing.assert_array_equal(np.asarray(before[:, :6 * 320]),
                                np.asarray(after[:, :6 * 320]))
  assert not np.allclose(before[:, 6 * 320:7 * 320], after[:, 6 * 320:7 * 320])


def test_streaming_encode_equals_full(codec, speech_like):
  full = codec.encode(speech_like, num_levels=5)
  stream = codec.encoder_stream(num_levels=5)
  parts = [stream.push(speech_like[:, a:b]) for a, b in
           [(0, 100), (100, 740), (740, 3000), (3000, 3001), (3001, 4960)]]
  assert parts[0].shape == (2, 0, 5)  # less than a frame so far
  parts.append(stream.flush())
  np.testing.assert_array_equal(np.asarray(jnp.concatenate(parts, axis=1)), np.asarray(full))


def test_streaming_decode_equals_full(codec, speech_like):
  codes = codec.encode(speech_like)
  full = np.asarray(codec.decode(codes))
  stream = codec.decoder_stream()
  chunks = [stream.push(codes[:, a:b]) for a, b in [(0, 1), (1, 5), (5, 6), (6, 16)]]
  assert [c.shape[1] for c in chunks] == [320, 1280, 320, 3200]
  streamed = np.asarray(jnp.concatenate(chunks, axis=1))
  # Same products and sums; convolution kernels may order the sums differently
  # for different lengths, so allow float rounding.
  np.testing.assert_allclose(streamed, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_bad_waveforms(codec):
  good = np.zeros((1, 640), np.float32)
  cases = [
      (dict(wav=good, sample_rate=24000), "expects 16000 Hz"),
      (dict(wav=np.zeros((1, 640, 2), np.float32)), "2 channels"),
      (dict(wav=np.zeros(640, np.float32)), r"\[batch, samples\]"),
      (dict(wav=np.zeros((1, 0), np.float32)), "empty"),
      (dict(wav=np.zeros((1, 100), np.float32)), "fewer than one frame"),
      (dict(wav=np.full((1, 640), np.nan, np.float32)), "NaN or infinite"),
      (dict(wav=np.full((1, 640), np.inf, np.float32)), "NaN or infinite"),
      (dict(wav=np.zeros((1, 640), np.int16)), "floating point"),
      (dict(wav=good, num_levels=0), "num_levels must be an integer in"),
      (dict(wav=good, num_levels=9), "num_levels must be an integer in"),
  ]
  for kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      codec.encode(**kwargs)


def test_bad_codes(codec):
  cases = [
      (np.full((1, 2, 4), 64, np.int32), r"\[0, 64\), got values in \[64, 64\]"),
      (np.full((1, 2, 4), -1, np.int32), "got values in"),
      (np.zeros((1, 2, 9), np.int32), "9 levels; the codec has 8"),
      (np.zeros((1, 2), np.int32), r"\[batch, frames, levels\]"),
      (np.zeros((1, 2, 4), np.float32), "must be integers"),
      (np.zeros((1, 0, 4), np.int32), "empty"),
  ]
  for codes, message in cases:
    with pytest.raises(ValueError, match=message):
      codec.decode(codes)
  stream = codec.decoder_stream()
  stream.push(np.zeros((2, 1, 4), np.int32))
  with pytest.raises(ValueError, match="differs from the stream"):
    stream.push(np.zeros((3, 1, 4), np.int32))
  with pytest.raises(ValueError, match="NaN or infinite"):
    codec.encoder_stream().push(np.full((1, 10), np.nan, np.float32))


def test_unknown_config():
  with pytest.raises(ValueError, match=r"not a named size \(paper_16khz, paper_24khz, tiny\)"):
    Codec.random("huge")
