"""EnCodec import: the JAX port against Hugging Face's outputs on the committed
tiny checkpoints (tests/fixtures/encodec, made by scripts/make_encodec_fixture.py
with torch; no torch here), streaming, and the refusals."""
import functools
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from soundlm.codec import hf_encodec
from soundlm.codec.api import Codec
from soundlm.semantic.safetensors_io import read_safetensors

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "encodec"
BANDWIDTHS = (0.6, 1.2)


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def codecs():
  """Each variant with all its levels."""
  return {variant: Codec.from_hf(FIXTURE / variant) for variant in ("reflect", "constant")}


@pytest.mark.parametrize("variant", ["reflect", "constant"])
def test_codes_waveform_and_embeddings_match_reference(codecs, reference, variant):
  codec, wav = codecs[variant], reference["waveform"]
  embeddings = jax.jit(functools.partial(codec.model.apply, method="embed"))(
      codec.variables, wav)
  np.testing.assert_allclose(embeddings, reference[f"{variant}_embeddings"], rtol=0, atol=1e-4)
  codes = np.asarray(codec.encode(wav))
  for bandwidth in BANDWIDTHS:
    # Hugging Face encodes each bandwidth on its own; its levels are a prefix of all levels.
    levels = hf_encodec.levels_for_bandwidth(codec.model.config, bandwidth, BANDWIDTHS)
    np.testing.assert_array_equal(codes[..., :levels], reference[f"{variant}_codes_{bandwidth}"])
    np.testing.assert_allclose(codec.decode(codes[..., :levels]),
                               reference[f"{variant}_decoded_{bandwidth}"], rtol=0, atol=1e-4)


def test_codec_describes_the_checkpoint_and_picks_levels_by_bandwidth(reference):
  folder = FIXTURE / "reflect"
  codec = Codec.from_hf(folder, bandwidth=0.6)
  assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (24_000, 320, 75.0)
  assert (codec.num_levels, codec.codebook_size) == (2, 16)
  np.testing.assert_array_equal(codec.encode(reference["waveform"]),
                                reference["reflect_codes_0.6"])
  assert Codec.from_hf(folder, num_levels=3).num_levels == 3
  with pytest.raises(ValueError, match=r"bandwidth 6.0 kbps is not one of .*\[0.6, 1.2\]"):
    Codec.from_hf(folder, bandwidth=6.0)
  with pytest.raises(ValueError, match="num_levels must be in 1..4"):
    Codec.from_hf(folder, num_levels=5)
  with pytest.raises(ValueError, match="not both"):
    Codec.from_hf(folder, num_levels=2, bandwidth=0.6)
  with pytest.raises(ValueError, match="sample_rate is 16000 Hz but the codec expects 24000"):
    codec.encode(reference["waveform"], sample_rate=16_000)


def test_encoder_stream_in_uneven_chunks_equals_encode(codecs, reference):
  """Reflect padding needs the first 7 frames at once; later chunks are any size."""
  codec, wav = codecs["reflect"], reference["waveform"]
  assert codec.model.stream_warmup_frames == 7
  assert codecs["constant"].model.stream_warmup_frames == 1
  stream = codec.encoder_stream()
  cuts = [0, 200, 2290, 4530, 6770, wav.shape[1]]
  pieces = [stream.push(wav[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
  pieces.append(stream.flush())
  assert [p.shape[1] for p in pieces] == [0, 7, 7, 7, 3, 0]
  np.testing.assert_array_equal(np.concatenate(pieces, axis=1), codec.encode(wav))


def test_decoder_stream_in_uneven_chunks_equals_decode(codecs, reference):
  codec, codes = codecs["reflect"], reference["reflect_codes_1.2"]
  stream = codec.decoder_stream()
  frames = [0, 3, 7, 14, 21, codes.shape[1]]
  pieces = [stream.push(codes[:, a:b]) for a, b in zip(frames[:-1], frames[1:])]
  assert [p.shape[1] // 320 for p in pieces] == [0, 7, 7, 7, 3]
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), codec.decode(codes),
                             rtol=0, atol=1e-5)


def test_streams_shorter_than_the_warmup_equal_full_calls(codecs, reference):
  codec = codecs["reflect"]
  wav = reference["waveform"][:, :2 * 320 + 100]
  stream = codec.encoder_stream()
  assert stream.push(wav).shape[1] == 0
  codes = stream.flush()  # zero-padded to 3 frames, as encode pads
  assert codes.shape[1] == 3
  np.testing.assert_array_equal(codes, codec.encode(wav))
  decoder = codec.decoder_stream()
  assert decoder.push(codes).shape[1] == 0
  np.testing.assert_allclose(decoder.flush(), codec.decode(codes), rtol=0, atol=1e-5)


def _copy(tmp_path, variant="reflect"):
  folder = tmp_path / variant
  shutil.copytree(FIXTURE / variant, folder)
  return folder


def test_wrong_model_type_and_unsupported_settings_are_refused_by_name(tmp_path):
  hf = json.loads((FIXTURE / "reflect" / "config.json").read_text())
  with pytest.raises(ValueError, match="model_type 'mimi' is not 'encodec'"):
    hf_encodec.config_from_hf({**hf, "model_type": "mimi"})
  for change, name in [({"use_causal_conv": False}, "use_causal_conv=False"),
                       ({"normalize": True}, "normalize=True"),
                       ({"norm_type": "time_group_norm"}, "norm_type='time_group_norm'"),
                       ({"audio_channels": 2}, "audio_channels=2"),
                       ({"chunk_length_s": 1.0}, "chunk_length_s=1.0"),
                       ({"pad_mode": "replicate"}, "pad_mode='replicate'"),
                       ({"codebook_dim": 4}, "codebook_dim=4")]:
    with pytest.raises(ValueError, match=f"not supported by soundlm's EnCodec port: {name}"):
      hf_encodec.config_from_hf({**hf, **change})
  folder = _copy(tmp_path)
  (folder / "config.json").write_text(json.dumps({**hf, "model_type": "wav2vec2-bert"}))
  with pytest.raises(ValueError, match=r"model_type 'wav2vec2-bert' is not a codec soundlm "
                                       r"imports \('encodec' or 'mimi'\)"):
    Codec.from_hf(folder)
  (folder / "model.safetensors").unlink()
  (folder / "config.json").write_text(json.dumps(hf))
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    Codec.from_hf(folder)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    Codec.from_hf(tmp_path)


def test_missing_extra_and_misshapen_tensors_are_named():
  tensors = read_safetensors(FIXTURE / "reflect" / "model.safetensors")
  config, _ = hf_encodec.config_from_hf(
      json.loads((FIXTURE / "reflect" / "config.json").read_text()))
  conv = "encoder.layers.0.conv.parametrizations.weight.original1"
  lstm = "decoder.layers.1.lstm.weight_hh_l1"
  book = "quantizer.layers.3.codebook.embed"
  missing = {k: v for k, v in tensors.items() if k not in (conv, lstm, book)}
  with pytest.raises(hf_encodec.CheckpointMismatchError) as error:
    hf_encodec.variables_from_hf(missing, config)
  for name in ("encoder.layers.0.conv.weight_g/weight_v", lstm, book):
    assert name in str(error.value)
  with pytest.raises(hf_encodec.CheckpointMismatchError,
                     match=r"extra tensors \['quantizer.layers.4.codebook.embed'\]"):
    hf_encodec.variables_from_hf(
        {**tensors, "quantizer.layers.4.codebook.embed": tensors[book]}, config)
  with pytest.raises(hf_encodec.CheckpointMismatchError,
                     match=r"wrong shapes \['decoder.layers.1.lstm.weight_hh_l1: \(128, 16\)"):
    hf_encodec.variables_from_hf({**tensors, lstm: tensors[lstm][:, :16]}, config)


def test_older_weight_norm_names_load_the_same_kernels():
  """Checkpoints converted by older transformers name the weight-norm pair weight_g/weight_v."""
  tensors = read_safetensors(FIXTURE / "constant" / "model.safetensors")
  config, _ = hf_encodec.config_from_hf(
      json.loads((FIXTURE / "constant" / "config.json").read_text()))
  renamed = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v
             for k, v in tensors.items()}
  assert any(k.endswith("weight_g") for k in renamed)
  new, old = (hf_encodec.variables_from_hf(t, config)["params"] for t in (tensors, renamed))
  np.testing.assert_array_equal(new["decoder"]["layers_3"]["kernel"],
                                old["decoder"]["layers_3"]["kernel"])
