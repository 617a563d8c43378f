"""Import of Hugging Face `Wav2Vec2BertModel` checkpoints (w2v-BERT 2.0).

Reads `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`) from a local folder with numpy alone, and
returns a `W2vBertConfig` plus parameters for `W2vBertEncoder`. Every tensor
of the file must map onto a parameter and every parameter must be found, with
the right shape; anything else is an error naming the tensors.
"""
import json
import os
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
  if input_dim % 2:
    raise ValueError(f"{source}: feature_projection_input_dim {input_dim} is not two "
                     "stacked fbank frames")
  return W2vBertConfig(
      frontend="stacked", num_mel_bins=input_dim // 2, width=hf.get("hidden_size", 1024),
      num_heads=hf.get("num_attention_heads", 16), mlp_dim=hf.get("intermediate_size", 4096),
      conv_kernel_size=hf.get("conv_depthwise_kernel_size", 31),
      num_contrastive_layers=hf.get("num_hidden_layers", 24), num_mlm_layers=0,
      block="w2v_bert_2", position=_POSITIONS[position],
      left_max_position=hf.get("left_max_position_embeddings", 64),
      right_max_position=hf.get("right_max_position_embeddings", 8),
      rotary_base=float(hf.get("rotary_embedding_base", 10_000)),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-5), dropout_rate=0.0)


def _has_mask_embedding(hf: dict) -> bool:
  return hf.get("mask_time_prob", 0.05) > 0 or hf.get("mask_feature_prob", 0.0) > 0


def _hf_name(path: tuple[str, ...]) -> str:
  """Flax parameter path -> Hugging Face tensor name."""
  *modules, leaf = path
  if modules == [] and leaf == "mask_embedding":
    return "masked_spec_embed"
  if modules[0] == "frontend":
    modules = ["feature_projection", *modules[1:]]
  elif modules[0].startswith("layers_"):
    modules = ["encoder", "layers", modules[0][len("layers_"):], *modules[1:]]
  if leaf == "distance_embedding":
    modules, leaf = modules + [leaf], "weight"
  leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join(modules + [leaf])


def _to_hf(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """A flax parameter in the Hugging Face (PyTorch) layout."""
  if path[-1] != "kernel":
    return value.reshape(-1) if path[-1] == "bias" else value
  module = path[-2]
  if module == "depthwise_conv":                 # [K, 1, C] <-> [C, 1, K]
    return value.transpose(2, 1, 0)
  inputs = 2 if module == "linear_out" else 1    # [H, Dh, D] projects heads back
  matrix = value.reshape(int(np.prod(value.shape[:inputs])), -1).T  # [out, in]
  return matrix[..., None] if module.startswith("pointwise_conv") else matrix


def _from_hf(path: tuple[str, ...], tensor: np.ndarray, shape) -> np.ndarray:
  if path[-1] != "kernel":
    return tensor.reshape(shape)
  if path[-2] == "depthwise_conv":
    return tensor.transpose(2, 1, 0)
  matrix = tensor[..., 0] if path[-2].startswith("pointwise_conv") else tensor
  return matrix.T.reshape(shape)


def abstract_params(config: W2vBertConfig) -> dict:
  """Shapes of the W2vBertEncoder parameters for `config` (nothing allocated)."""
  features = jnp.zeros((1, 2, 2 * config.num_mel_bins))
  variables = jax.eval_shape(W2vBertEncoder(config).init, jax.random.key(0), features)
  return nn.meta.unbox(variables)["params"]


def to_hf_tensors(params: dict) -> dict[str, np.ndarray]:
  """W2vBertEncoder parameters as Hugging Face tensors (names and layouts)."""
  flat = flax.traverse_util.flatten_dict(nn.meta.unbox(params))
  return {_hf_name(path): _to_hf(path, np.asarray(value)) for path, value in flat.items()}


def params_from_hf(tensors: dict[str, np.ndarray], config: W2vBertConfig,
                   has_mask_embedding: bool = True, source: str = "checkpoint") -> dict:
  """Maps Hugging Face tensors onto W2vBertEncoder parameters (float32 numpy)."""
  tensors = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in tensors.items()}
  flat_shapes = flax.traverse_util.flatten_dict(abstract_params(config))
  expected = {}
  for path, leaf in flat_shapes.items():
    if path == ("mask_embedding",) and not has_mask_embedding:
      continue
    expected[_hf_name(path)] = (path, leaf.shape,
                                _to_hf(path, np.zeros(leaf.shape, np.float32)).shape)
  missing = sorted(set(expected) - set(tensors))
  extra = sorted(set(tensors) - set(expected))
  wrong = sorted(f"{name}: {tuple(tensors[name].shape)}, expected {hf_shape}"
                 for name, (_, _, hf_shape) in expected.items()
                 if name in tensors and tuple(tensors[name].shape) != hf_shape)
  if missing or extra or wrong:
    raise CheckpointMismatchError(
        f"{source} does not match its config: missing tensors {missing}, "
        f"extra tensors {extra}, wrong shapes {wrong}")
  flat = {path: _from_hf(path, tensors[name].astype(np.float32), shape)
          for name, (path, shape, _) in expected.items()}
  if not has_mask_embedding:  # the reference model has none; it only serves pre-training
    flat[("mask_embedding",)] = np.zeros(flat_shapes[("mask_embedding",)].shape, np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def _read_tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
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
  params = params_from_hf(_read_tensors(folder), config, _has_mask_embedding(hf), str(folder))
  return config, params
