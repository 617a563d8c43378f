"""Import of Hugging Face HuBERT checkpoints against reference hidden states
(tests/fixtures/hubert, written by scripts/make_hubert_fixture.py)."""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.semantic import api, hf_hubert, hf_import, hubert
from soundlm.semantic.safetensors_io import read_safetensors

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "hubert"
LAYOUTS = ("base", "stable")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def models():
  """layout -> (config, params, jitted (wav, lengths) -> (hidden states, last))."""
  loaded = {}
  for layout in LAYOUTS:
    config, params = hf_hubert.load_hf_hubert(FIXTURE / layout)

    def run(wav, lengths=None, config=config, params=params):
      if config.normalize_waveform:
        wav = hubert.normalize_waveform(wav, lengths)
      return hubert.HubertEncoder(config).apply({"params": params}, wav, lengths)
    loaded[layout] = config, params, jax.jit(run)
  return loaded


def _max_differences(ours, want, frames=None):
  """Max |ours - want| of every hidden state (first `frames` frames)."""
  return [float(np.abs(np.asarray(o)[..., :frames, :] - w[..., :frames, :]).max())
          for o, w in zip(ours, want)]


def test_configs_follow_the_layouts(models):
  base, stable = models["base"][0], models["stable"][0]
  assert (base.feature_norm, base.stable_layer_norm, base.conv_bias) == ("group", False, False)
  assert (stable.feature_norm, stable.stable_layer_norm, stable.conv_bias) == ("layer", True, True)
  assert not base.normalize_waveform and stable.normalize_waveform  # preprocessor_config.json
  for config in (base, stable):
    assert (config.samples_per_token, config.receptive_field, config.token_padding) == (
        320, 400, (40, 40))
    assert config.num_frames(15_950) == 49 and config.num_frames(400) == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layer_of_each_clip_matches_reference(reference, models, layout):
  _, _, run = models[layout]
  for i, length in enumerate(reference["lengths"]):
    hidden, last = run(jnp.asarray(reference["waveform"][i:i + 1, :length]))
    want = reference[f"hidden_{layout}_clip{i}"]
    assert len(hidden) == want.shape[0] == 3 and hidden[0].shape[1:] == want.shape[1:]
    differences = _max_differences([h[0] for h in hidden], want)
    assert max(differences) < TOLERANCE, (i, differences)
    assert _max_differences([last[0]], [reference[f"last_{layout}_clip{i}"]])[0] < TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padded_batch_matches_reference_and_each_clip_alone(reference, models, layout):
  config, _, run = models[layout]
  wav, lengths = jnp.asarray(reference["waveform"]), reference["lengths"]
  with_lengths, _ = run(wav, jnp.asarray(lengths))
  for i, length in enumerate(lengths):
    frames = config.num_frames(int(length))
    alone = _max_differences([h[i] for h in with_lengths], reference[f"hidden_{layout}_clip{i}"],
                             frames)
    assert max(alone) < TOLERANCE, (i, alone)
  # The reference's own padded batch: attention mask for the layer-norm
  # extractor (padding-free), none for the group-norm one (padding taken in).
  want = reference[f"hidden_{layout}_batch"]
  if config.feature_norm == "layer":
    for i, length in enumerate(lengths):
      frames = config.num_frames(int(length))
      batch = _max_differences([h[i] for h in with_lengths], want[:, i], frames)
      assert max(batch) < TOLERANCE, (i, batch)
  else:
    unmasked, _ = run(wav)
    assert max(_max_differences(unmasked, want)) < TOLERANCE
    short = config.num_frames(int(lengths[1]))
    assert np.abs(np.asarray(with_lengths[1][1, :short]) - want[1, 1, :short]).max() > 1e-2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_embeddings_of_a_clip_do_not_depend_on_batch_padding(reference, layout):
  embedder = api.SemanticEmbedder.from_hf(FIXTURE / layout, 2)
  assert (embedder.samples_per_token, embedder.frame_rate) == (320, 50.0)
  lengths = reference["lengths"]
  short = reference["waveform"][1:, :lengths[1]]
  alone = np.asarray(embedder.embed(short))[0]
  assert alone.shape[0] == lengths[1] // 320
  batch = np.zeros((2, 19_200), np.float32)  # 3250 and 7680 samples of padding
  batch[:, :lengths.max()] = reference["waveform"]
  embedded = np.asarray(embedder.embed(batch, lengths=lengths))
  assert embedded.shape[1] == 60
  np.testing.assert_allclose(embedded[1, :alone.shape[0]], alone, atol=1e-5, rtol=1e-5)
  assert not embedded[1, alone.shape[0]:].any() and not embedded[0, lengths[0] // 320:].any()


def _folder(tmp_path, layout="base"):
  folder = tmp_path / layout
  shutil.copytree(FIXTURE / layout, folder)
  return folder


def _config_and_tensors(layout="base"):
  hf = json.loads((FIXTURE / layout / "config.json").read_text())
  return hf, hf_hubert.config_from_hf(hf), read_safetensors(FIXTURE / layout /
                                                            "model.safetensors")


def test_unsupported_configs_and_other_model_types_are_refused(tmp_path):
  hf, _, _ = _config_and_tensors()
  for change, pattern in (({"model_type": "wav2vec2"}, "model_type 'wav2vec2' is not 'hubert'"),
                          ({"feat_extract_norm": "batch"}, "feat_extract_norm 'batch'"),
                          ({"conv_pos_batch_norm": True}, "conv_pos_batch_norm"),
                          ({"hidden_act": "gelu_fast"}, "hidden_act 'gelu_fast'"),
                          ({"feat_extract_activation": "tanh"}, "feat_extract_activation"),
                          ({"conv_kernel": [10, 3]}, "one entry per convolution")):
    with pytest.raises(ValueError, match=pattern):
      hf_hubert.config_from_hf({**hf, **change})
  folder = _folder(tmp_path)
  (folder / "config.json").write_text(json.dumps({**hf, "model_type": "wav2vec2"}))
  with pytest.raises(ValueError, match=r"model_type 'wav2vec2' is not a semantic model soundlm "
                                       r"imports \(expected one of \['hubert', 'wav2vec2-bert'\]"):
    api.load_hf(folder)
  (folder / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="no config.json"):
    api.load_hf(folder)


def test_preprocessor_must_describe_16_khz_mono_waveforms(tmp_path):
  folder = _folder(tmp_path, "stable")
  preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
  for change, pattern in (({"sampling_rate": 24000}, r"sampling_rate 24000 \(expected 16000\)"),
                          ({"feature_size": 2}, r"feature_size 2 \(expected 1\)"),
                          ({"feature_extractor_type": "SeamlessM4TFeatureExtractor"},
                           "feature_extractor_type 'SeamlessM4TFeatureExtractor'")):
    (folder / "preprocessor_config.json").write_text(json.dumps({**preprocessor, **change}))
    with pytest.raises(ValueError, match="HuBERT takes 16 kHz mono waveforms; not these "
                                         f"settings: {pattern}"):
      hf_hubert.load_hf_hubert(folder)
  # Without the file, fairseq's choice: normalise for the layer-norm extractor only.
  (folder / "preprocessor_config.json").unlink()
  assert hf_hubert.load_hf_hubert(folder)[0].normalize_waveform
  base = _folder(tmp_path, "base")
  (base / "preprocessor_config.json").unlink()
  assert not hf_hubert.load_hf_hubert(base)[0].normalize_waveform


def test_missing_extra_and_misshapen_tensors_are_named():
  _, config, tensors = _config_and_tensors()
  missing = dict(tensors)
  del missing["encoder.layers.1.attention.k_proj.bias"]
  with pytest.raises(hf_import.CheckpointMismatchError,
                     match=r"missing tensors \['encoder.layers.1.attention.k_proj.bias'\]"):
    hf_hubert.params_from_hf(missing, config)
  extra = {**tensors, "lm_head.weight": np.zeros((4, 32), np.float32)}
  with pytest.raises(hf_import.CheckpointMismatchError, match=r"extra tensors \['lm_head.weight'\]"):
    hf_hubert.params_from_hf(extra, config)
  wrong = {**tensors, "feature_projection.projection.weight": np.zeros((32, 16), np.float32)}
  with pytest.raises(hf_import.CheckpointMismatchError,
                     match=r"wrong shapes \['feature_projection.projection.weight: \(32, 16\)"):
    hf_hubert.params_from_hf(wrong, config)
  half = dict(tensors)
  del half["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
  with pytest.raises(hf_import.CheckpointMismatchError,
                     match=r"missing tensors \['encoder.pos_conv_embed.conv.parametrizations"
                           r".weight.original0'\]"):
    hf_hubert.params_from_hf(half, config)


def test_older_weight_norm_names_and_task_head_prefix_load_the_same_params():
  _, config, tensors = _config_and_tensors()
  renamed = {}
  for name, value in tensors.items():
    name = name.replace("parametrizations.weight.original0", "weight_g")
    renamed["hubert." + name.replace("parametrizations.weight.original1", "weight_v")] = value
  want = jax.tree_util.tree_leaves_with_path(hf_hubert.params_from_hf(tensors, config))
  got = jax.tree_util.tree_leaves(hf_hubert.params_from_hf(renamed, config))
  assert len(got) == len(want)
  for (path, value), other in zip(want, got):
    np.testing.assert_array_equal(other, value, err_msg=jax.tree_util.keystr(path))
