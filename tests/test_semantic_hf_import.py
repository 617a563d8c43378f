"""Import of Hugging Face w2v-BERT 2.0 checkpoints against reference hidden states
(tests/fixtures/w2v_bert, written by scripts/make_w2v_bert_fixture.py)."""
import json
import pathlib
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.semantic import features, hf_import
from soundlm.semantic.encoder import W2vBertEncoder
from soundlm.semantic.safetensors_io import read_safetensors

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "w2v_bert"
SCHEMES = ("relative_key", "rotary")


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_layer_matches_reference(reference, scheme):
  config, params = hf_import.load_hf_w2v_bert(FIXTURE / scheme)
  assert config.position == scheme and config.num_layers == 3
  encoder = W2vBertEncoder(config)
  expected = reference[f"hidden_states_{scheme}"]
  from_features, _ = encoder.apply({"params": params},
                                   jnp.asarray(reference["input_features"][None]))
  wav = jnp.asarray(reference["waveform"][None])
  from_waveform, _ = encoder.apply({"params": params}, features.seamless_features(wav))
  assert len(from_features) == expected.shape[0] == 4
  scale = np.abs(expected).max()
  for layer, want in enumerate(expected):
    for source, ours in (("features", from_features), ("waveform", from_waveform)):
      np.testing.assert_allclose(np.asarray(ours[layer][0]), want, rtol=1e-5,
                                 atol=1e-5 * scale, err_msg=f"layer {layer} from {source}")


def test_export_layout_round_trips_every_tensor():
  tensors = read_safetensors(FIXTURE / "relative_key" / "model.safetensors")
  _, params = hf_import.load_hf_w2v_bert(FIXTURE / "relative_key")
  exported = hf_import.to_hf_tensors(params)
  assert set(exported) == set(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  # The relative-key model uses every entry of the mapping table.
  templates = {re.sub(r"\.layers\.\d+\.", ".layers.{i}.", name) for name in tensors}
  assert templates == {hf_name for hf_name, _ in hf_import.TENSORS.values()}


def _tensors_and_config():
  tensors = read_safetensors(FIXTURE / "relative_key" / "model.safetensors")
  hf = json.loads((FIXTURE / "relative_key" / "config.json").read_text())
  return tensors, hf_import.config_from_hf(hf)


def test_missing_extra_and_misshapen_tensors_raise():
  tensors, config = _tensors_and_config()
  missing = dict(tensors)
  del missing["encoder.layers.1.self_attn.linear_q.bias"]
  with pytest.raises(hf_import.CheckpointMismatchError,
                     match=r"missing tensors \['encoder.layers.1.self_attn.linear_q.bias'\]"):
    hf_import.params_from_hf(missing, config)
  extra = {**tensors, "lm_head.weight": np.zeros((4, 32), np.float32)}
  with pytest.raises(hf_import.CheckpointMismatchError,
                     match=r"extra tensors \['lm_head.weight'\]"):
    hf_import.params_from_hf(extra, config)
  wrong = {**tensors, "encoder.layers.0.ffn1.output_dense.weight": np.zeros((48, 32))}
  with pytest.raises(hf_import.CheckpointMismatchError, match="wrong shapes"):
    hf_import.params_from_hf(wrong, config)


def test_unsupported_configs_and_missing_files_raise(tmp_path):
  hf = json.loads((FIXTURE / "relative_key" / "config.json").read_text())
  for change, pattern in (({"add_adapter": True}, "add_adapter"),
                          ({"position_embeddings_type": "relative"}, "relative"),
                          ({"hidden_act": "gelu"}, "hidden_act"),
                          ({"model_type": "wav2vec2"}, "model_type")):
    with pytest.raises(ValueError, match=pattern):
      hf_import.config_from_hf({**hf, **change})
  folder = tmp_path / "model"
  shutil.copytree(FIXTURE / "relative_key", folder)
  (folder / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf_import.load_hf_w2v_bert(folder)
  (folder / "model.safetensors").write_bytes(b"\x10\x00")
  with pytest.raises(ValueError, match="not a safetensors file"):
    hf_import.load_hf_w2v_bert(folder)


def test_preprocessor_config_is_read_and_unreproduced_features_refused(tmp_path):
  folder = tmp_path / "model"
  shutil.copytree(FIXTURE / "relative_key", folder)
  seamless = {"feature_extractor_type": "SeamlessM4TFeatureExtractor", "feature_size": 80,
              "num_mel_bins": 80, "padding_side": "right", "padding_value": 1,
              "processor_class": "Wav2Vec2BertProcessor", "return_attention_mask": True,
              "sampling_rate": 16000, "stride": 2}  # w2v-BERT 2.0's own
  (folder / "preprocessor_config.json").write_text(json.dumps(seamless))
  config, _ = hf_import.load_hf_w2v_bert(folder)
  assert config.num_mel_bins == 80
  for change, pattern in (({"stride": 3}, r"stride 3 \(expected 2\)"),
                          ({"sampling_rate": 24000}, r"sampling_rate 24000 \(expected 16000\)"),
                          ({"num_mel_bins": 128, "feature_size": 128},
                           r"num_mel_bins 128 \(expected 80\), feature_size 128"),
                          ({"feature_extractor_type": "WhisperFeatureExtractor"},
                           "feature_extractor_type 'WhisperFeatureExtractor'")):
    (folder / "preprocessor_config.json").write_text(json.dumps({**seamless, **change}))
    with pytest.raises(ValueError, match="preprocessor_config.json: soundlm does not "
                                         f"reproduce these features: {pattern}"):
      hf_import.load_hf_w2v_bert(folder)
