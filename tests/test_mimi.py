"""Mimi import: the JAX port against Hugging Face's outputs on the committed tiny
checkpoint (tests/fixtures/mimi, made by scripts/make_mimi_fixture.py with
torch; no torch here), its place behind Codec, and the refusals."""
import functools
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from soundlm.codec import hf_encodec, hf_mimi
from soundlm.codec.api import Codec
from soundlm.io.token_space import TokenSpace

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "mimi"
MODEL = FIXTURE / "model"


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def codec():
  return Codec.from_hf(MODEL)


def _hf_config() -> dict:
  return json.loads((MODEL / "config.json").read_text())


def test_codes_embeddings_and_decoded_audio_match_reference(codec, reference):
  wav = reference["waveform"]
  embeddings = jax.jit(functools.partial(codec.model.apply, method="embed"))(
      codec.variables, wav)
  np.testing.assert_allclose(embeddings, reference["embeddings"], rtol=0, atol=1e-4)
  codes = np.asarray(codec.encode(wav))
  np.testing.assert_array_equal(codes, reference["codes"])
  # Hugging Face encodes each level count on its own; its codes are a prefix of all levels.
  for levels in (2, 4):
    np.testing.assert_allclose(codec.decode(codes[..., :levels]),
                               reference[f"decoded_{levels}"], rtol=0, atol=1e-4)


def test_codec_describes_the_checkpoint_and_picks_levels(codec, reference):
  assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (24_000, 1920, 12.5)
  assert (codec.num_levels, codec.codebook_size) == (4, 16)
  two = Codec.from_spec(f"hf:{MODEL},levels=2")
  assert two.num_levels == 2
  np.testing.assert_array_equal(two.encode(reference["waveform"]), reference["codes"][..., :2])
  with pytest.raises(ValueError, match="num_levels must be in 1..4"):
    Codec.from_hf(MODEL, num_levels=5)
  with pytest.raises(ValueError, match="Mimi checkpoint has no target bandwidths"):
    Codec.from_hf(MODEL, bandwidth=1.1)
  with pytest.raises(ValueError, match="'levels=x' is not a bandwidth in kbps or levels=N"):
    Codec.from_spec(f"hf:{MODEL},levels=x")
  with pytest.raises(ValueError, match="sample_rate is 16000 Hz but the codec expects 24000"):
    codec.encode(reference["waveform"], sample_rate=16_000)
  for stream in (codec.encoder_stream, codec.decoder_stream):
    with pytest.raises(ValueError, match="MimiModel runs whole clips only"):
      stream()


def test_mimi_frames_do_not_align_with_25hz_semantic_tokens(codec):
  """12.5 Hz codes against w2v-BERT's 25 Hz tokens is half a frame per token."""
  with pytest.raises(ValueError, match="codec frame rate 12.5 Hz is not a whole multiple of "
                                       "the semantic frame rate 25.0 Hz"):
    TokenSpace(sample_rate=codec.sample_rate, codec_frame_rate=codec.frame_rate,
               semantic_frame_rate=25.0, num_levels=codec.num_levels,
               codebook_size=codec.codebook_size, semantic_vocab=64)


def test_config_spellings_and_unsupported_settings():
  hf = _hf_config()
  config, groups = hf_mimi.config_from_hf(hf)
  assert (config.latent_stride, config.num_kv_heads, config.sliding_window, groups) == (
      2, 1, 5, 8)
  # kyutai/mimi's config.json names the frame rate and RoPE base the older way.
  older = {k: v for k, v in hf.items() if k not in ("_frame_rate", "rope_parameters")}
  assert hf_mimi.config_from_hf({**older, "frame_rate": 12.5, "rope_theta": 10_000.0}) == (
      config, groups)
  with pytest.raises(ValueError, match="model_type 'encodec' is not 'mimi'"):
    hf_mimi.config_from_hf({**hf, "model_type": "encodec"})
  for change, name in [({"use_causal_conv": False}, "use_causal_conv=False"),
                       ({"audio_channels": 2}, "audio_channels=2"),
                       ({"trim_right_ratio": 0.5}, "trim_right_ratio=0.5"),
                       ({"hidden_act": "relu"}, "hidden_act='relu'"),
                       ({"attention_bias": True}, "attention_bias=True"),
                       ({"pad_mode": "replicate"}, "pad_mode='replicate'"),
                       ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}},
                        "rope_type='linear'"),
                       ({"vector_quantization_hidden_dimension": 4},
                        "vector_quantization_hidden_dimension=4"),
                       ({"_frame_rate": 25.0}, "frame_rate=25.0"),
                       ({"_frame_rate": 10.0}, "frame_rate=10.0")]:
    with pytest.raises(ValueError, match=f"not supported by soundlm's Mimi port: {name}"):
      hf_mimi.config_from_hf({**hf, **change})


def test_other_model_types_and_missing_files_are_refused(tmp_path):
  folder = tmp_path / "model"
  shutil.copytree(MODEL, folder)
  (folder / "config.json").write_text(json.dumps({**_hf_config(), "model_type": "hubert"}))
  with pytest.raises(ValueError, match=r"model_type 'hubert' is not a codec soundlm imports"):
    Codec.from_hf(folder)
  (folder / "config.json").write_text(json.dumps(_hf_config()))
  (folder / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    Codec.from_hf(folder)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    Codec.from_hf(tmp_path)


def test_missing_extra_and_misshapen_tensors_are_named():
  tensors = hf_encodec.read_hf_weights(MODEL)
  config, groups = hf_mimi.config_from_hf(_hf_config())
  gone = ("encoder_transformer.layers.1.self_attn.k_proj.weight", "upsample.conv.weight",
          "quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum")
  with pytest.raises(hf_encodec.CheckpointMismatchError) as error:
    hf_mimi.variables_from_hf({k: v for k, v in tensors.items() if k not in gone}, config,
                              groups)
  assert all(name in str(error.value) for name in gone)
  extra = "quantizer.acoustic_residual_vector_quantizer.layers.3.codebook.embed_sum"
  book = gone[2]
  with pytest.raises(hf_encodec.CheckpointMismatchError, match=rf"extra tensors \['{extra}'\]"):
    hf_mimi.variables_from_hf({**tensors, extra: tensors[book]}, config, groups)
  with pytest.raises(hf_encodec.CheckpointMismatchError,
                     match=r"wrong shapes \['downsample.conv.weight: \(16, 16, 3\), "
                           r"expected \(16, 16, 4\)"):
    hf_mimi.variables_from_hf(
        {**tensors, "downsample.conv.weight": tensors["downsample.conv.weight"][..., :3]},
        config, groups)
