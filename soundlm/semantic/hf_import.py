"""Import of Hugging Face `Wav2Vec2BertModel` checkpoints (w2v-BERT 2.0).

Reads `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`) from a local folder with numpy alone, and
returns a `W2vBertConfig` plus parameters for `W2vBertEncoder`, whose layers are
the shared `ConformerBlock` with the w2v-BERT 2.0 options. `TENSORS` names the
Hugging Face tensor of every parameter. Every tensor of the file must map onto
a parameter and every parameter must be found, with the right shape; anything
else is an error naming the tensors. `map_tensors`, `LAYOUTS` and
`read_tensors` do the same for the HuBERT importer (`hf_hubert`).

The features are soundlm's (`soundlm.semantic.features`: the SeamlessM4T
extractor's log-mels at 16 kHz, pairs of frames stacked). A folder's
`preprocessor_config.json`, when it has one, must describe those features; a
setting they do not reproduce (extractor, sample rate, mel bins, stride) is an
error naming it. Without the file the SeamlessM4T defaults are assumed.
"""
import json
import os
import pathlib
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.semantic import features
from soundlm.semantic.config import W2vBertConfig
from soundlm.semantic.encoder import W2vBertEncoder
from soundlm.semantic.safetensors_io import read_safetensors

_PREFIX = "wav2vec2_bert."  # base-model prefix inside task-head checkpoints
_POSITIONS = {"relative_key": "relative_key", "rotary": "rotary", None: "none"}
_ACTIVATIONS = ("swish", "silu")


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not match the model its config describes."""


def config_from_hf(hf: dict, source: str = "config.json") -> W2vBertConfig:
  """W2vBertConfig for a Hugging Face Wav2Vec2BertConfig dict; refuses options
  the importer does not reproduce."""
  if hf.get("model_type") != "wav2vec2-bert":
    raise ValueError(f"{source}: model_type {hf.get('model_type')!r} is not 'wav2vec2-bert'")
  position = hf.get("position_embeddings_type", "relative_key")
  if position not in _POSITIONS:
    raise ValueError(f"{source}: position_embeddings_type {position!r} is not supported "
                     f"(supported: {sorted(p for p in _POSITIONS if p)} or null)")
  if hf.get("hidden_act", "swish") not in _ACTIVATIONS:
    raise ValueError(f"{source}: hidden_act {hf.get('hidden_act')!r} is not supported "
                     f"(expected one of {_ACTIVATIONS})")
  for flag in ("add_adapter", "use_intermediate_ffn_before_adapter"):
    if hf.get(flag, False):
      raise ValueError(f"{source}: {flag}=true is not supported; import the encoder of a "
                       "checkpoint without an adapter")
  input_dim = hf.get("feature_projection_input_dim", 160)
  if input_dim % features.STACKED_FRAMES:
    raise ValueError(f"{source}: feature_projection_input_dim {input_dim} is not "
                     f"{features.STACKED_FRAMES} stacked fbank frames")
  return W2vBertConfig(
      frontend="stacked", num_mel_bins=input_dim // features.STACKED_FRAMES,
      width=hf.get("hidden_size", 1024),
      num_heads=hf.get("num_attention_heads", 16), mlp_dim=hf.get("intermediate_size", 4096),
      conv_kernel_size=hf.get("conv_depthwise_kernel_size", 31),
      num_contrastive_layers=hf.get("num_hidden_layers", 24), num_mlm_layers=0,
      block="w2v_bert_2", position=_POSITIONS[position],
      left_max_position=hf.get("left_max_position_embeddings", 64),
      right_max_position=hf.get("right_max_position_embeddings", 8),
      rotary_base=float(hf.get("rotary_embedding_base", 10_000)),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-5), dropout_rate=0.0)


def check_preprocessor(preprocessor: dict, config: W2vBertConfig,
                       source: str = "preprocessor_config.json") -> None:
  """Raises ValueError naming every feature-extractor setting in
  `preprocessor` that soundlm's features for `config` do not reproduce."""
  expected = {"feature_extractor_type": "SeamlessM4TFeatureExtractor",
              "sampling_rate": features.SAMPLE_RATE, "stride": features.STACKED_FRAMES,
              "num_mel_bins": config.num_mel_bins, "feature_size": config.num_mel_bins}
  wrong = [f"{name} {preprocessor[name]!r} (expected {value!r})"
           for name, value in expected.items()
           if name in preprocessor and preprocessor[name] != value]
  if wrong:
    raise ValueError(f"{source}: soundlm does not reproduce these features: "
                     f"{', '.join(wrong)}")


def _has_mask_embedding(hf: dict) -> bool:
  return hf.get("mask_time_prob", 0.05) > 0 or hf.get("mask_feature_prob", 0.0) > 0


# W2vBertEncoder parameter -> (Hugging Face tensor, layout); '{i}' is the layer.
TENSORS = {
    "mask_embedding": ("masked_spec_embed", "vector"),
    "frontend/layer_norm/scale": ("feature_projection.layer_norm.weight", "vector"),
    "frontend/layer_norm/bias": ("feature_projection.layer_norm.bias", "vector"),
    "frontend/projection/kernel": ("feature_projection.projection.weight", "linear"),
    "frontend/projection/bias": ("feature_projection.projection.bias", "vector"),
    "layers_{i}/ff_start_norm/scale": ("encoder.layers.{i}.ffn1_layer_norm.weight", "vector"),
    "layers_{i}/ff_start_norm/bias": ("encoder.layers.{i}.ffn1_layer_norm.bias", "vector"),
    "layers_{i}/ff_start/wi/kernel": ("encoder.layers.{i}.ffn1.intermediate_dense.weight",
                                      "linear"),
    "layers_{i}/ff_start/wi/bias": ("encoder.layers.{i}.ffn1.intermediate_dense.bias",
                                    "vector"),
    "layers_{i}/ff_start/wo/kernel": ("encoder.layers.{i}.ffn1.output_dense.weight", "linear"),
    "layers_{i}/ff_start/wo/bias": ("encoder.layers.{i}.ffn1.output_dense.bias", "vector"),
    "layers_{i}/pre_attention_norm/scale": ("encoder.layers.{i}.self_attn_layer_norm.weight",
                                            "vector"),
    "layers_{i}/pre_attention_norm/bias": ("encoder.layers.{i}.self_attn_layer_norm.bias",
                                           "vector"),
    "layers_{i}/attention/query": ("encoder.layers.{i}.self_attn.linear_q.weight", "linear"),
    "layers_{i}/attention/query_bias": ("encoder.layers.{i}.self_attn.linear_q.bias", "vector"),
    "layers_{i}/attention/key": ("encoder.layers.{i}.self_attn.linear_k.weight", "linear"),
    "layers_{i}/attention/key_bias": ("encoder.layers.{i}.self_attn.linear_k.bias", "vector"),
    "layers_{i}/attention/value": ("encoder.layers.{i}.self_attn.linear_v.weight", "linear"),
    "layers_{i}/attention/value_bias": ("encoder.layers.{i}.self_attn.linear_v.bias", "vector"),
    "layers_{i}/attention/out": ("encoder.layers.{i}.self_attn.linear_out.weight",
                                 "linear_from_heads"),
    "layers_{i}/attention/out_bias": ("encoder.layers.{i}.self_attn.linear_out.bias", "vector"),
    "layers_{i}/attention/relative_key/embedding": (
        "encoder.layers.{i}.self_attn.distance_embedding.weight", "table"),
    "layers_{i}/convolution/norm/scale": ("encoder.layers.{i}.conv_module.layer_norm.weight",
                                          "vector"),
    "layers_{i}/convolution/norm/bias": ("encoder.layers.{i}.conv_module.layer_norm.bias",
                                         "vector"),
    "layers_{i}/convolution/pointwise_in/kernel": (
        "encoder.layers.{i}.conv_module.pointwise_conv1.weight", "pointwise_conv"),
    "layers_{i}/convolution/depthwise/kernel": (
        "encoder.layers.{i}.conv_module.depthwise_conv.weight", "conv"),
    "layers_{i}/convolution/depthwise_norm/scale": (
        "encoder.layers.{i}.conv_module.depthwise_layer_norm.weight", "vector"),
    "layers_{i}/convolution/depthwise_norm/bias": (
        "encoder.layers.{i}.conv_module.depthwise_layer_norm.bias", "vector"),
    "layers_{i}/convolution/pointwise_out/kernel": (
        "encoder.layers.{i}.conv_module.pointwise_conv2.weight", "pointwise_conv"),
    "layers_{i}/ff_end_norm/scale": ("encoder.layers.{i}.ffn2_layer_norm.weight", "vector"),
    "layers_{i}/ff_end_norm/bias": ("encoder.layers.{i}.ffn2_layer_norm.bias", "vector"),
    "layers_{i}/ff_end/wi/kernel": ("encoder.layers.{i}.ffn2.intermediate_dense.weight",
                                    "linear"),
    "layers_{i}/ff_end/wi/bias": ("encoder.layers.{i}.ffn2.intermediate_dense.bias", "vector"),
    "layers_{i}/ff_end/wo/kernel": ("encoder.layers.{i}.ffn2.output_dense.weight", "linear"),
    "layers_{i}/ff_end/wo/bias": ("encoder.layers.{i}.ffn2.output_dense.bias", "vector"),
    "layers_{i}/final_norm/scale": ("encoder.layers.{i}.final_layer_norm.weight", "vector"),
    "layers_{i}/final_norm/bias": ("encoder.layers.{i}.final_layer_norm.bias", "vector"),
}

# layout -> (flax value -> PyTorch tensor, (PyTorch tensor, flax shape) -> flax value).
# Flax kernels are [in, ...out] ([E, H, D] for query/key/value, [H, D, E] for out);
# PyTorch Linear weights are [out, in], Conv1d weights [out, in / groups, K].
LAYOUTS = {
    "vector": (lambda v: v.reshape(-1), lambda t, shape: t.reshape(shape)),
    "table": (lambda v: v, lambda t, shape: t.reshape(shape)),
    "linear": (lambda v: v.reshape(v.shape[0], -1).T, lambda t, shape: t.T.reshape(shape)),
    "linear_from_heads": (lambda v: v.reshape(-1, v.shape[-1]).T,
                          lambda t, shape: t.T.reshape(shape)),
    "pointwise_conv": (lambda v: v.reshape(v.shape[0], -1).T[..., None],
                       lambda t, shape: t[..., 0].T.reshape(shape)),
    "conv": (lambda v: v.transpose(2, 1, 0),  # any Conv1d, depthwise and grouped ones too
             lambda t, shape: t.transpose(2, 1, 0).reshape(shape)),
}


def hf_entry(path: tuple[str, ...], table: dict = TENSORS) -> tuple[str, str]:
  """Flax parameter path -> (Hugging Face tensor name, layout) from `table`, whose
  keys write the number of a numbered module ('layers_3', 'conv_0') as '{i}'."""
  name = "/".join(path)
  number = re.search(r"_(\d+)(?=/|$)", name)
  key = f"{name[:number.start()]}_{{i}}{name[number.end():]}" if number else name
  if key not in table:
    raise KeyError(f"parameter {name} has no Hugging Face tensor in the import table")
  hf_name, layout = table[key]
  return (hf_name.format(i=number[1]) if number else hf_name), layout


def map_tensors(tensors: dict[str, np.ndarray], shapes: dict[tuple, tuple], table: dict,
                source: str = "checkpoint") -> dict[tuple, np.ndarray]:
  """Flat parameters {path: float32 array} of the given shapes from Hugging Face
  tensors named by `table`; every tensor must map onto a parameter and every
  parameter be found with its shape, else CheckpointMismatchError names them."""
  expected = {}
  for path, shape in shapes.items():
    name, layout = hf_entry(path, table)
    hf_shape = LAYOUTS[layout][0](np.zeros(shape, np.float32)).shape
    expected[name] = (path, shape, layout, hf_shape)
  missing = sorted(set(expected) - set(tensors))
  extra = sorted(set(tensors) - set(expected))
  wrong = sorted(f"{name}: {tuple(tensors[name].shape)}, expected {hf_shape}"
                 for name, (_, _, _, hf_shape) in expected.items()
                 if name in tensors and tuple(tensors[name].shape) != hf_shape)
  if missing or extra or wrong:
    raise CheckpointMismatchError(
        f"{source} does not match its config: missing tensors {missing}, "
        f"extra tensors {extra}, wrong shapes {wrong}")
  return {path: LAYOUTS[layout][1](tensors[name].astype(np.float32), shape)
          for name, (path, shape, layout, _) in expected.items()}


def abstract_params(config: W2vBertConfig) -> dict:
  """Shapes of the W2vBertEncoder parameters for `config` (nothing allocated)."""
  features = jnp.zeros((1, 2, 2 * config.num_mel_bins))
  variables = jax.eval_shape(W2vBertEncoder(config).init, jax.random.key(0), features)
  return nn.meta.unbox(variables)["params"]


def to_hf_tensors(params: dict) -> dict[str, np.ndarray]:
  """W2vBertEncoder parameters as Hugging Face tensors (names and layouts)."""
  tensors = {}
  for path, value in flax.traverse_util.flatten_dict(nn.meta.unbox(params)).items():
    name, layout = hf_entry(path)
    tensors[name] = LAYOUTS[layout][0](np.asarray(value))
  return tensors


def params_from_hf(tensors: dict[str, np.ndarray], config: W2vBertConfig,
                   has_mask_embedding: bool = True, source: str = "checkpoint") -> dict:
  """Maps Hugging Face tensors onto W2vBertEncoder parameters (float32 numpy)."""
  tensors = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in tensors.items()}
  shapes = {path: leaf.shape for path, leaf in
            flax.traverse_util.flatten_dict(abstract_params(config)).items()}
  mask_shape = shapes.pop(("mask_embedding",))
  if has_mask_embedding:
    shapes[("mask_embedding",)] = mask_shape
  flat = map_tensors(tensors, shapes, TENSORS, source)
  if not has_mask_embedding:  # the reference model has none; it only serves pre-training
    flat[("mask_embedding",)] = np.zeros(mask_shape, np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def read_tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """Every tensor of a folder's model.safetensors, or of the shards its
  model.safetensors.index.json lists."""
  single = folder / "model.safetensors"
  index = folder / "model.safetensors.index.json"
  if single.is_file():
    return read_safetensors(single)
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(read_safetensors(folder / shard))
    return tensors
  raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                          "(only the safetensors format is read)")


def load_hf_w2v_bert(path) -> tuple[W2vBertConfig, dict]:
  """(config, W2vBertEncoder params) from a local Hugging Face w2v-BERT 2.0 folder."""
  folder = pathlib.Path(os.fspath(path))
  config_file = folder / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{folder}: no config.json (expected a Hugging Face "
                            "Wav2Vec2BertModel folder)")
  hf = json.loads(config_file.read_text())
  config = config_from_hf(hf, str(config_file))
  preprocessor = folder / "preprocessor_config.json"
  if preprocessor.is_file():
    check_preprocessor(json.loads(preprocessor.read_text()), config, str(preprocessor))
  params = params_from_hf(read_tensors(folder), config, _has_mask_embedding(hf), str(folder))
  return config, params
