"""Import of Hugging Face `HubertModel` checkpoints (HuBERT base and large layouts).

Reads `config.json` and `model.safetensors` (or a sharded index) from a local
folder with numpy alone and returns a `HubertConfig` plus `HubertEncoder`
parameters; `TENSORS` names the Hugging Face tensor of every parameter. The
positional convolution's weight norm (`weight_g`/`weight_v`, or the
`parametrizations.weight.original0/1` that newer transformers write) is folded
into one kernel. `masked_spec_embed` serves pre-training only and is dropped;
any other tensor the model does not use, or one it lacks, is an error naming it.

Options the port does not reproduce are refused by name. Training-only
settings (dropouts, layer drop, SpecAugment masking, CTC and classifier heads)
do not change inference and are ignored. A `preprocessor_config.json` must
describe 16 kHz mono waveforms; its `do_normalize` becomes
`HubertConfig.normalize_waveform`. Without one, waveforms are normalised for
the layer-norm extractor only, as fairseq trained HuBERT base and large.
"""
import json
import os
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.semantic import features
from soundlm.semantic.hf_import import CheckpointMismatchError, map_tensors, read_tensors
from soundlm.semantic.hubert import HubertConfig, HubertEncoder

_PREFIX = "hubert."  # base-model prefix inside task-head checkpoints
_UNUSED = ("masked_spec_embed",)
# Hugging Face activation -> soundlm.layers.feedforward.ACTIVATIONS.
_ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                "relu": "relu", "swish": "swish", "silu": "swish"}
_POSITION = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM = (("weight_g", "weight_v"),
                ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def _activation(hf: dict, name: str, source: str) -> str:
  value = hf.get(name, "gelu")
  if value not in _ACTIVATIONS:
    raise ValueError(f"{source}: {name} {value!r} is not supported (expected one of "
                     f"{sorted(_ACTIVATIONS)})")
  return _ACTIVATIONS[value]


def config_from_hf(hf: dict, source: str = "config.json",
                   normalize_waveform: bool | None = None) -> HubertConfig:
  """HubertConfig for a Hugging Face HubertConfig dict; refuses options the port
  does not reproduce. `normalize_waveform` None: the fairseq default."""
  if hf.get("model_type") != "hubert":
    raise ValueError(f"{source}: model_type {hf.get('model_type')!r} is not 'hubert'")
  norm = hf.get("feat_extract_norm", "group")
  if norm not in ("group", "layer"):
    raise ValueError(f"{source}: feat_extract_norm {norm!r} is not supported (expected "
                     "'group' or 'layer')")
  if hf.get("conv_pos_batch_norm", False):
    raise ValueError(f"{source}: conv_pos_batch_norm=true is not supported (HuBERT's "
                     "positional convolution has weight norm)")
  if normalize_waveform is None:
    normalize_waveform = norm == "layer"
  return HubertConfig(
      conv_dim=tuple(hf.get("conv_dim", HubertConfig.conv_dim)),
      conv_kernel=tuple(hf.get("conv_kernel", HubertConfig.conv_kernel)),
      conv_stride=tuple(hf.get("conv_stride", HubertConfig.conv_stride)),
      conv_bias=bool(hf.get("conv_bias", False)), feature_norm=norm,
      feature_activation=_activation(hf, "feat_extract_activation", source),
      feature_projection_norm=bool(hf.get("feat_proj_layer_norm", True)),
      width=hf.get("hidden_size", 768), num_layers=hf.get("num_hidden_layers", 12),
      num_heads=hf.get("num_attention_heads", 12), mlp_dim=hf.get("intermediate_size", 3072),
      activation=_activation(hf, "hidden_act", source),
      position_kernel=hf.get("num_conv_pos_embeddings", 128),
      position_groups=hf.get("num_conv_pos_embedding_groups", 16),
      stable_layer_norm=bool(hf.get("do_stable_layer_norm", False)),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
      normalize_waveform=bool(normalize_waveform))


def check_preprocessor(preprocessor: dict, source: str = "preprocessor_config.json") -> bool:
  """Raises ValueError naming every setting of a Wav2Vec2FeatureExtractor config
  that is not 16 kHz mono waveforms; returns its `do_normalize`."""
  expected = {"feature_extractor_type": "Wav2Vec2FeatureExtractor",
              "sampling_rate": features.SAMPLE_RATE, "feature_size": 1}
  wrong = [f"{name} {preprocessor[name]!r} (expected {value!r})"
           for name, value in expected.items()
           if name in preprocessor and preprocessor[name] != value]
  if wrong:
    raise ValueError(f"{source}: HuBERT takes 16 kHz mono waveforms; not these settings: "
                     f"{', '.join(wrong)}")
  return bool(preprocessor.get("do_normalize", True))


# HubertEncoder parameter -> (Hugging Face tensor, layout); '{i}' numbers a
# convolution or a layer.
TENSORS = {
    "feature_extractor/conv_{i}/kernel": ("feature_extractor.conv_layers.{i}.conv.weight",
                                          "conv"),
    "feature_extractor/conv_{i}/bias": ("feature_extractor.conv_layers.{i}.conv.bias",
                                        "vector"),
    "feature_extractor/norm_{i}/scale": ("feature_extractor.conv_layers.{i}.layer_norm.weight",
                                         "vector"),
    "feature_extractor/norm_{i}/bias": ("feature_extractor.conv_layers.{i}.layer_norm.bias",
                                        "vector"),
    "projection_norm/scale": ("feature_projection.layer_norm.weight", "vector"),
    "projection_norm/bias": ("feature_projection.layer_norm.bias", "vector"),
    "projection/kernel": ("feature_projection.projection.weight", "linear"),
    "projection/bias": ("feature_projection.projection.bias", "vector"),
    "position/conv/kernel": (_POSITION + "weight", "conv"),
    "position/conv/bias": (_POSITION + "bias", "vector"),
    "encoder_norm/scale": ("encoder.layer_norm.weight", "vector"),
    "encoder_norm/bias": ("encoder.layer_norm.bias", "vector"),
    "layers_{i}/attention/query": ("encoder.layers.{i}.attention.q_proj.weight", "linear"),
    "layers_{i}/attention/query_bias": ("encoder.layers.{i}.attention.q_proj.bias", "vector"),
    "layers_{i}/attention/key": ("encoder.layers.{i}.attention.k_proj.weight", "linear"),
    "layers_{i}/attention/key_bias": ("encoder.layers.{i}.attention.k_proj.bias", "vector"),
    "layers_{i}/attention/value": ("encoder.layers.{i}.attention.v_proj.weight", "linear"),
    "layers_{i}/attention/value_bias": ("encoder.layers.{i}.attention.v_proj.bias", "vector"),
    "layers_{i}/attention/out": ("encoder.layers.{i}.attention.out_proj.weight",
                                 "linear_from_heads"),
    "layers_{i}/attention/out_bias": ("encoder.layers.{i}.attention.out_proj.bias", "vector"),
    "layers_{i}/attention_norm/scale": ("encoder.layers.{i}.layer_norm.weight", "vector"),
    "layers_{i}/attention_norm/bias": ("encoder.layers.{i}.layer_norm.bias", "vector"),
    "layers_{i}/mlp/wi/kernel": ("encoder.layers.{i}.feed_forward.intermediate_dense.weight",
                                 "linear"),
    "layers_{i}/mlp/wi/bias": ("encoder.layers.{i}.feed_forward.intermediate_dense.bias",
                               "vector"),
    "layers_{i}/mlp/wo/kernel": ("encoder.layers.{i}.feed_forward.output_dense.weight",
                                 "linear"),
    "layers_{i}/mlp/wo/bias": ("encoder.layers.{i}.feed_forward.output_dense.bias", "vector"),
    "layers_{i}/mlp_norm/scale": ("encoder.layers.{i}.final_layer_norm.weight", "vector"),
    "layers_{i}/mlp_norm/bias": ("encoder.layers.{i}.final_layer_norm.bias", "vector"),
}


def _fold_weight_norm(tensors: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """Replaces the positional convolution's weight-norm pair by its kernel,
  g * v / |v| with the norm over all but the kernel axis (PyTorch dim=2)."""
  tensors = dict(tensors)
  for g_name, v_name in ((_POSITION + g, _POSITION + v) for g, v in _WEIGHT_NORM):
    present = [name for name in (g_name, v_name) if name in tensors]
    if not present:
      continue
    if len(present) == 1:
      missing = v_name if present == [g_name] else g_name
      raise CheckpointMismatchError(
          f"{source} does not match its config: missing tensors ['{missing}'] (the other "
          f"half of the positional convolution's weight norm, {present[0]}, is there)")
    g, v = tensors.pop(g_name).astype(np.float64), tensors.pop(v_name).astype(np.float64)
    norm = np.sqrt((v * v).sum(axis=(0, 1), keepdims=True))
    tensors[_POSITION + "weight"] = (g * v / norm).astype(np.float32)
  return tensors


def abstract_params(config: HubertConfig) -> dict:
  """Shapes of the HubertEncoder parameters for `config` (nothing allocated)."""
  wav = jnp.zeros((1, config.receptive_field), jnp.float32)
  variables = jax.eval_shape(HubertEncoder(config).init, jax.random.key(0), wav)
  return nn.meta.unbox(variables)["params"]


def params_from_hf(tensors: dict[str, np.ndarray], config: HubertConfig,
                   source: str = "checkpoint") -> dict:
  """Maps Hugging Face tensors onto HubertEncoder parameters (float32 numpy)."""
  tensors = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in tensors.items()
             if k.removeprefix(_PREFIX) not in _UNUSED}
  shapes = {path: leaf.shape for path, leaf in
            flax.traverse_util.flatten_dict(abstract_params(config)).items()}
  flat = map_tensors(_fold_weight_norm(tensors, source), shapes, TENSORS, source)
  return flax.traverse_util.unflatten_dict(flat)


def load_hf_hubert(path) -> tuple[HubertConfig, dict]:
  """(config, HubertEncoder params) from a local Hugging Face HuBERT folder."""
  folder = pathlib.Path(os.fspath(path))
  config_file = folder / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{folder}: no config.json (expected a Hugging Face "
                            "HubertModel folder)")
  preprocessor = folder / "preprocessor_config.json"
  normalize = (check_preprocessor(json.loads(preprocessor.read_text()), str(preprocessor))
               if preprocessor.is_file() else None)
  config = config_from_hf(json.loads(config_file.read_text()), str(config_file), normalize)
  return config, params_from_hf(read_tensors(folder), config, str(folder))
