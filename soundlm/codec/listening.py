"""A codec that makes a token model's evaluation audible.

A task that trains on codec tokens (SoundStorm, AudioLM's acoustic stages)
names the codec its tokens came from; the trainer's jitted `eval_audio` then
decodes reference and generated tokens with it. The codec's variables stay on
the host, so that jit takes them as constants on whatever mesh it runs.
"""
import jax
import jax.numpy as jnp

from soundlm.codec.api import Codec


class ListeningCodec:
  """`Codec.from_spec(spec)` checked against the token space of `model_name`:
  `codebook_size` codes per level and at least `num_levels` levels."""

  def __init__(self, spec: str, *, codebook_size: int, num_levels: int, model_name: str):
    codec = Codec.from_spec(spec)
    if codec.codebook_size != codebook_size or codec.num_levels < num_levels:
      raise ValueError(
          f"codec {spec!r} has {codec.num_levels} levels of {codec.codebook_size} codes; "
          f"the {model_name} model makes {num_levels} levels of {codebook_size} codes, "
          "which it cannot decode")
    self.module = codec.model
    self.sample_rate = codec.sample_rate
    self._variables = jax.device_get(codec.variables)

  def decode(self, codes):
    """int32 codes [B, T, Q'] -> float32 [B, T * hop]; traceable."""
    variables = jax.tree_util.tree_map(jnp.asarray, self._variables)
    return self.module.apply(variables, codes, method="decode")
