"""Import of Hugging Face `MimiModel` checkpoints (kyutai/mimi).

Reads `config.json` and `model.safetensors` from a local folder with numpy
alone (the checkpoint's flat layout: `encoder.layers.*`, `encoder_transformer.*`,
`downsample.*`, `quantizer.*`, `upsample.*`, `decoder_transformer.*`,
`decoder.layers.*`) and returns a `MimiConfig` plus the variables of
`MimiModel`. Codebooks are stored as sums and usage counts; their vectors
(embed_sum / usage, as Hugging Face divides them) go into the shared
quantizer. The grouped upsampling convolution is expanded to a dense
block-diagonal kernel. Every tensor must map onto a variable and every
variable be found with its shape; anything else is an error naming the
tensors. A config outside what the port runs is refused naming the setting.
"""
import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from soundlm.codec.encodec import upsampling_layers
from soundlm.codec.hf_encodec import (CheckpointMismatchError, hf_module_name, read_hf_config,
                                      read_hf_weights, seanet_settings, unsupported_settings)
from soundlm.codec.mimi import MimiConfig, MimiModel
from soundlm.layers.rvq import COLLECTION

# Settings the port reproduces only at these values.
_REQUIRED = {"use_causal_conv": True, "audio_channels": 1, "trim_right_ratio": 1.0,
             "hidden_act": "gelu", "attention_bias": False}
_HALVES = ("semantic_residual_vector_quantizer", "acoustic_residual_vector_quantizer")
_EPSILON = 1e-5  # Hugging Face's floor on a code's usage


def config_from_hf(hf: dict, source: str = "config.json") -> tuple[MimiConfig, int]:
  """(MimiConfig with every level of the checkpoint, the upsampling convolution's
  groups) for a Hugging Face MimiConfig dict; refuses what the port does not run."""
  wrong = unsupported_settings(hf, "mimi", _REQUIRED, "constant", source)
  rope = hf.get("rope_parameters") or {}
  if rope.get("rope_type", "default") != "default":
    wrong.append(f"rope_type={rope['rope_type']!r} (supported: 'default')")
  codebook_dim = hf.get("codebook_dim", 256)
  if hf.get("vector_quantization_hidden_dimension", 256) != codebook_dim:
    wrong.append(f"vector_quantization_hidden_dimension="
                 f"{hf['vector_quantization_hidden_dimension']} (supported: codebook_dim="
                 f"{codebook_dim})")
  if not isinstance(hf.get("residual_kernel_size", 3), int):
    wrong.append(f"residual_kernel_size={hf['residual_kernel_size']!r} (supported: one int)")
  sample_rate = hf.get("sampling_rate", 24_000)
  ratios = tuple(hf.get("upsampling_ratios") or (8, 6, 5, 4))
  seanet_hop = int(np.prod(ratios))
  frame_rate = hf.get("frame_rate", hf.get("_frame_rate")) or sample_rate / (2 * seanet_hop)
  stride = sample_rate / seanet_hop / frame_rate
  if sample_rate % seanet_hop or stride != round(stride) or stride < 2:
    wrong.append(f"frame_rate={frame_rate} (supported: the SEANet rate "
                 f"{sample_rate / seanet_hop} Hz divided by a whole stride >= 2)")
  if wrong:
    raise ValueError(f"{source}: not supported by soundlm's Mimi port: {', '.join(wrong)}")
  hidden, heads = hf.get("hidden_size", 512), hf.get("num_attention_heads", 8)
  levels = hf.get("num_quantizers", 32)
  return MimiConfig(
      sample_rate=sample_rate, hidden_size=hidden, upsampling_ratios=ratios,
      latent_stride=int(round(stride)), **seanet_settings(hf, MimiConfig),
      num_layers=hf.get("num_hidden_layers", 8), num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hidden // heads,
      intermediate_size=hf.get("intermediate_size", 2048),
      rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
      sliding_window=hf.get("sliding_window", 250), norm_eps=hf.get("norm_eps", 1e-5),
      codebook_size=hf.get("codebook_size", 2048), codebook_dim=codebook_dim,
      num_quantizers=levels, num_semantic_levels=hf.get("num_semantic_quantizers", 1),
      num_levels=levels), hf.get("upsample_groups", 512)


def abstract_variables(config: MimiConfig) -> dict:
  """Shapes of the MimiModel variables for `config` (nothing allocated)."""
  wav = jnp.zeros((1, config.hop_length), jnp.float32)
  return nn.meta.unbox(jax.eval_shape(MimiModel(config).init, jax.random.key(0), wav))


def _grouped_transposed(weight: np.ndarray, groups: int) -> np.ndarray:
  """ConvTranspose1d weight [C_in, C_out / groups, K] -> dense kernel [K, C_in, C_out]."""
  c_in, per_group, width = weight.shape
  dense = np.zeros((width, c_in, per_group * groups), weight.dtype)
  step = c_in // groups
  for g in range(groups):
    dense[:, g * step:(g + 1) * step, g * per_group:(g + 1) * per_group] = (
        weight[g * step:(g + 1) * step].transpose(2, 0, 1))
  return dense


def _source(path: tuple[str, ...], config: MimiConfig, groups: int):
  """(Hugging Face tensor name, tensor -> flax value, expected tensor shape from
  the flax shape) of the parameter at `path`."""
  module, leaf = hf_module_name(path[:-1]), path[-1]
  if path[0] in ("encoder", "decoder", "downsample", "upsample"):  # convolutions
    name = f"{module}.conv.{'bias' if leaf == 'bias' else 'weight'}"
    if leaf == "bias":
      return name, lambda t: t, lambda s: s
    if path[0] == "upsample":
      return (name, lambda t: _grouped_transposed(t, groups),
              lambda s: (s[1], s[2] // groups, s[0]))
    if path[:2] in {("decoder", f"layers_{i}") for _, i, _ in upsampling_layers(config.seanet)}:
      return name, lambda t: t.transpose(2, 0, 1), lambda s: (s[1], s[2], s[0])
    return name, lambda t: t.transpose(2, 1, 0), lambda s: s[::-1]
  if leaf == "kernel":  # Linear [out, in], or the quantizer's 1x1 Conv1d [out, in, 1]
    if path[0] == "quantizer":
      return f"{module}.weight", lambda t: t[..., 0].T, lambda s: s[::-1] + (1,)
    return f"{module}.weight", lambda t: t.T, lambda s: s[::-1]
  if module.endswith("layernorm"):
    return f"{module}.{'weight' if leaf == 'scale' else 'bias'}", lambda t: t, lambda s: s
  return f"{module}.{leaf}", lambda t: t, lambda s: s  # layer scales


def variables_from_hf(tensors: dict[str, np.ndarray], config: MimiConfig, groups: int,
                      source: str = "checkpoint") -> dict:
  """Maps Hugging Face tensors onto MimiModel variables (float32 numpy)."""
  if config.hidden_size % groups:
    raise CheckpointMismatchError(f"{source}: upsample_groups {groups} does not divide "
                                  f"hidden_size {config.hidden_size}")
  shapes = abstract_variables(config)
  params, expected, missing, wrong = {}, set(), [], []

  def take(name, shape):
    expected.add(name)
    if name not in tensors:
      missing.append(name)
    elif tuple(tensors[name].shape) != tuple(shape):
      wrong.append(f"{name}: {tuple(tensors[name].shape)}, expected {tuple(shape)}")
    else:
      return tensors[name].astype(np.float32)
    return None

  for path, leaf in flax.traverse_util.flatten_dict(shapes["params"]).items():
    name, convert, hf_shape = _source(path, config, groups)
    value = take(name, hf_shape(tuple(leaf.shape)))
    params[path] = None if value is None else convert(value)
  quantizer = {}
  for half in _HALVES:
    stats = shapes[COLLECTION]["quantizer"][half]["layers"]
    books = []
    for level in range(stats["codebook"].shape[0]):
      prefix = f"quantizer.{half}.layers.{level}.codebook"
      embed_sum = take(f"{prefix}.embed_sum", (config.codebook_size, config.codebook_dim))
      usage = take(f"{prefix}.cluster_usage", (config.codebook_size,))
      take(f"{prefix}.initialized", (1,))
      if embed_sum is not None and usage is not None:
        books.append(embed_sum / np.maximum(usage, _EPSILON)[:, None])
    if len(books) == stats["codebook"].shape[0]:
      codebook = np.stack(books).astype(np.float32)
      quantizer[half] = {"layers": {
          "codebook": codebook, "embed_sum": codebook,
          "cluster_size": np.ones(stats["cluster_size"].shape, np.float32),
          "frames_unused": np.zeros(stats["frames_unused"].shape, np.float32),
          "initialized": np.asarray(True)}}
  extra = sorted(set(tensors) - expected)
  if missing or extra or wrong:
    raise CheckpointMismatchError(
        f"{source} does not match its config: missing tensors {sorted(missing)}, "
        f"extra tensors {extra}, wrong shapes {sorted(wrong)}")
  return {"params": flax.traverse_util.unflatten_dict(params),
          COLLECTION: {"quantizer": quantizer}}


def load_hf_mimi(path, *, num_levels: int | None = None) -> tuple[MimiConfig, dict]:
  """(config, MimiModel variables) from a local Hugging Face Mimi folder; codes
  have the first `num_levels` levels (default: all; at least the semantic ones)."""
  folder, hf = read_hf_config(path, "MimiModel")
  config, groups = config_from_hf(hf, str(folder / "config.json"))
  variables = variables_from_hf(read_hf_weights(folder), config, groups, str(folder))
  if num_levels is not None:
    if not config.num_semantic_levels <= num_levels <= config.num_quantizers:
      raise ValueError(f"num_levels must be in {config.num_semantic_levels}.."
                       f"{config.num_quantizers} (the checkpoint's levels, semantic first), "
                       f"got {num_levels}")
    config = dataclasses.replace(config, num_levels=num_levels)
  return config, variables
