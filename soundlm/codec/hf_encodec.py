"""Import of Hugging Face `EncodecModel` checkpoints (e.g. facebook/encodec_24khz).

Reads `config.json` and `model.safetensors` from a local folder with numpy
alone and returns an `EncodecConfig` plus the variables of `EncodecModel`
('params' and the quantizer's 'quantizer' collection). Weight-normalised
convolutions (`weight_g`/`weight_v`, or `parametrizations.weight.original0/1`
as newer transformers write them) are folded into plain kernels here. Every
tensor of the file must map onto a variable and every variable must be found
with the right shape; anything else is an error naming the tensors.

The port runs the causal, weight-normalised, mono models without input
normalisation or chunking (the 24 kHz family); a config outside that is
refused naming the setting.
"""
import dataclasses
import json
import math
import os
import pathlib
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.codec.encodec import PAD_MODES, EncodecConfig, EncodecModel, upsampling_layers
from soundlm.layers.rvq import COLLECTION
from soundlm.semantic.safetensors_io import read_safetensors

# Settings the port reproduces only at these values.
_REQUIRED = {"use_causal_conv": True, "norm_type": "weight_norm", "normalize": False,
             "audio_channels": 1, "chunk_length_s": None, "trim_right_ratio": 1.0}
_SEANET = ("num_filters", "kernel_size", "last_kernel_size", "residual_kernel_size",
           "dilation_growth_rate", "num_residual_layers", "compress", "use_conv_shortcut",
           "pad_mode")
_WEIGHT_NORM = {"g": ("weight_g", "parametrizations.weight.original0"),
                "v": ("weight_v", "parametrizations.weight.original1")}
# Hugging Face codebook buffer -> (its shape, the shared quantizer's variable).
_CODEBOOK = {"embed": (lambda c: (c.codebook_size, c.hidden_size), "codebook"),
             "cluster_size": (lambda c: (c.codebook_size,), "cluster_size"),
             "embed_avg": (lambda c: (c.codebook_size, c.hidden_size), "embed_sum"),
             "inited": (lambda c: (1,), "initialized")}


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not match the model its config describes."""


def config_from_hf(hf: dict, source: str = "config.json") -> tuple[EncodecConfig, tuple]:
  """(EncodecConfig with every level of the checkpoint, target bandwidths in
  kbps) for a Hugging Face EncodecConfig dict; refuses what the port does not run."""
  wrong = unsupported_settings(hf, "encodec", _REQUIRED, "reflect", source)
  hidden = hf.get("hidden_size", 128)
  if hf.get("codebook_dim") not in (None, hidden):
    wrong.append(f"codebook_dim={hf['codebook_dim']} (supported: hidden_size={hidden})")
  if wrong:
    raise ValueError(f"{source}: not supported by soundlm's EnCodec port: {', '.join(wrong)}")
  ratios = tuple(hf.get("upsampling_ratios", (8, 5, 4, 2)))
  sample_rate, codebook_size = hf.get("sampling_rate", 24_000), hf.get("codebook_size", 1024)
  bandwidths = tuple(float(b) for b in hf.get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0)))
  levels = int(1000 * bandwidths[-1] // (_bits_per_second(sample_rate, ratios, codebook_size)))
  if levels < 1:
    raise ValueError(f"{source}: target_bandwidths {list(bandwidths)} leave no quantizer level")
  config = EncodecConfig(
      sample_rate=sample_rate, hidden_size=hidden, upsampling_ratios=ratios,
      num_lstm_layers=hf.get("num_lstm_layers", 2), codebook_size=codebook_size,
      num_levels=levels, **seanet_settings(hf, EncodecConfig))
  return config, bandwidths


def unsupported_settings(hf: dict, model_type: str, required: dict, pad_mode: str,
                         source: str) -> list[str]:
  """Refuses a config of another model_type; returns the settings of `hf` that
  differ from `required` or name a pad mode the convolutions lack (default
  `pad_mode`), as 'name=value (supported: ...)'."""
  if hf.get("model_type") != model_type:
    raise ValueError(f"{source}: model_type {hf.get('model_type')!r} is not {model_type!r}")
  wrong = [f"{name}={hf[name]!r} (supported: {value!r})" for name, value in required.items()
           if name in hf and hf[name] != value]
  if hf.get("pad_mode", pad_mode) not in PAD_MODES:
    wrong.append(f"pad_mode={hf['pad_mode']!r} (supported: {sorted(PAD_MODES)})")
  return wrong


def seanet_settings(hf: dict, defaults: type) -> dict:
  """The SEANet fields that Hugging Face's EnCodec and Mimi configs name alike,
  from `hf` or else the defaults of the config class `defaults`."""
  return {name: hf.get(name, getattr(defaults, name)) for name in _SEANET}


def _bits_per_second(sample_rate: int, ratios: tuple, codebook_size: int) -> int:
  """One level's bit rate as Hugging Face counts it: whole bits at ceil(frame rate)."""
  return math.ceil(sample_rate / math.prod(ratios)) * math.ceil(math.log2(codebook_size))


def levels_for_bandwidth(config: EncodecConfig, bandwidth: float, bandwidths: tuple) -> int:
  """Quantizer levels at `bandwidth` kbps, as Hugging Face's `EncodecModel.encode` picks them."""
  if bandwidth not in bandwidths:
    raise ValueError(f"bandwidth {bandwidth} kbps is not one of the model's target "
                     f"bandwidths {list(bandwidths)}")
  per_level = _bits_per_second(config.sample_rate, config.upsampling_ratios,
                               config.codebook_size)
  return max(1, math.floor(bandwidth * 1000 / per_level))


def abstract_variables(config: EncodecConfig) -> dict:
  """Shapes of the EncodecModel variables for `config` (nothing allocated)."""
  wav = jnp.zeros((1, config.hop_length), jnp.float32)
  return nn.meta.unbox(jax.eval_shape(EncodecModel(config).init, jax.random.key(0), wav))


def hf_module_name(path: tuple[str, ...]) -> str:
  """('encoder', 'layers_3', 'block_1') -> 'encoder.layers.3.block.1'."""
  return ".".join(re.sub(r"_(\d+)$", r".\1", part) for part in path)


def _conv_kernel(tensors: dict, prefix: str, transposed: bool) -> np.ndarray | None:
  """The folded kernel [K, C_in, C_out] of a weight-normalised (Conv|ConvTranspose)1d,
  None when one of its tensors is missing."""
  g, v = (next((tensors[f"{prefix}.{name}"] for name in names if f"{prefix}.{name}" in tensors),
               None) for names in _WEIGHT_NORM.values())
  if g is None or v is None:
    return None
  g, v = g.astype(np.float64), v.astype(np.float64)
  # torch.nn.utils.weight_norm (dim 0): each slice of dim 0 scaled to norm g.
  weight = g * v / np.sqrt(np.sum(v * v, axis=(1, 2), keepdims=True))
  # Conv1d is [out, in, K]; ConvTranspose1d is [in, out, K].
  return weight.transpose(2, 0, 1) if transposed else weight.transpose(2, 1, 0)


def variables_from_hf(tensors: dict[str, np.ndarray], config: EncodecConfig,
                      source: str = "checkpoint") -> dict:
  """Maps Hugging Face tensors onto EncodecModel variables (float32 numpy)."""
  shapes = abstract_variables(config)
  transposed = {("decoder", f"layers_{index}") for _, index, _ in upsampling_layers(config)}
  params, expected, missing, wrong = {}, set(), [], []

  def take(name: str, shape: tuple, value: np.ndarray | None):
    if value is None:
      missing.append(name)
    elif tuple(value.shape) != tuple(shape):
      wrong.append(f"{name}: {tuple(value.shape)}, expected {tuple(shape)}")
    else:
      return value.astype(np.float32)
    return None

  for path, leaf in flax.traverse_util.flatten_dict(shapes["params"]).items():
    module = hf_module_name(path[:-1])
    if path[-1] == "kernel":
      prefix = f"{module}.conv"
      expected.update(f"{prefix}.{name}" for names in _WEIGHT_NORM.values() for name in names)
      params[path] = take(f"{prefix}.weight_g/weight_v", leaf.shape,
                          _conv_kernel(tensors, prefix, path[:2] in transposed))
    else:
      name = f"{module}.{'conv' if path[-1] == 'bias' else 'lstm'}.{path[-1]}"
      expected.add(name)
      params[path] = take(name, leaf.shape, tensors.get(name))
  stats = shapes[COLLECTION]["quantizer"]
  books = {key: [] for key in _CODEBOOK}
  for key, (shape, _) in _CODEBOOK.items():
    for level in range(config.num_levels):
      name = f"quantizer.layers.{level}.codebook.{key}"
      expected.add(name)
      books[key].append(take(name, shape(config), tensors.get(name)))
  extra = sorted(set(tensors) - expected)
  if missing or extra or wrong:
    raise CheckpointMismatchError(
        f"{source} does not match its config: missing tensors {sorted(missing)}, "
        f"extra tensors {extra}, wrong shapes {sorted(wrong)}")
  quantizer = {target: np.stack(books[key]).astype(stats[target].dtype)
               for key, (_, target) in _CODEBOOK.items() if key != "inited"}
  quantizer["initialized"] = np.asarray(bool(np.all(np.stack(books["inited"]) > 0)))
  quantizer["frames_unused"] = np.zeros(stats["frames_unused"].shape,
                                        stats["frames_unused"].dtype)
  return {"params": flax.traverse_util.unflatten_dict(params),
          COLLECTION: {"quantizer": quantizer}}


def read_hf_config(path, model: str) -> tuple[pathlib.Path, dict]:
  """(folder, its config.json as a dict) of a local Hugging Face `model` folder."""
  folder = pathlib.Path(os.fspath(path))
  config_file = folder / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{folder}: no config.json (expected a Hugging Face {model} "
                            "folder)")
  return folder, json.loads(config_file.read_text())


def read_hf_weights(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """The tensors of the folder's model.safetensors."""
  weights = folder / "model.safetensors"
  if not weights.is_file():
    raise FileNotFoundError(f"{folder}: no model.safetensors (only a single safetensors "
                            "file is read)")
  return read_safetensors(weights)


def select_levels(config: EncodecConfig, variables: dict,
                  num_levels: int) -> tuple[EncodecConfig, dict]:
  """The model restricted to its first `num_levels` quantizer levels."""
  if not 1 <= num_levels <= config.num_levels:
    raise ValueError(f"num_levels must be in 1..{config.num_levels} (the checkpoint's "
                     f"levels), got {num_levels}")
  quantizer = {key: value if key == "initialized" else value[:num_levels]
               for key, value in variables[COLLECTION]["quantizer"].items()}
  return (dataclasses.replace(config, num_levels=num_levels),
          {"params": variables["params"], COLLECTION: {"quantizer": quantizer}})


def load_hf_encodec(path, *, num_levels: int | None = None,
                    bandwidth: float | None = None) -> tuple[EncodecConfig, dict]:
  """(config, EncodecModel variables) from a local Hugging Face EnCodec folder,
  with the levels of `bandwidth` kbps (one of the model's target bandwidths)
  or the first `num_levels` levels (default: every level)."""
  folder, hf = read_hf_config(path, "EncodecModel")
  if num_levels is not None and bandwidth is not None:
    raise ValueError(f"give num_levels ({num_levels}) or bandwidth ({bandwidth}), not both")
  config, bandwidths = config_from_hf(hf, str(folder / "config.json"))
  variables = variables_from_hf(read_hf_weights(folder), config, str(folder))
  if bandwidth is not None:
    num_levels = levels_for_bandwidth(config, bandwidth, bandwidths)
  return select_levels(config, variables, config.num_levels if num_levels is None
                       else num_levels)
