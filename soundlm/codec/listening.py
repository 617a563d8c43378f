"""A codec that makes a token model's evaluation audible.

A task that trains on codec tokens (SoundStorm, AudioLM's acoustic stages)
takes the codec its tokens came from (`soundlm.codec.api.listening_codec`
in gin); the trainer's jitted `eval_audio` then decodes reference and
generated tokens with it. The codec's variables stay on the host, so that jit
takes them as constants on whatever mesh it runs.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


class ListeningCodec:
  """A codec module (SoundStream, EnCodec or Mimi) and its variables on the host."""

  def __init__(self, module: nn.Module, variables: dict, name: str):
    self.module, self.name = module, name
    self._variables = jax.device_get(variables)

  @property
  def sample_rate(self) -> int:
    return self.module.sample_rate

  def check_tokens(self, *, codebook_size: int, num_levels: int, model_name: str):
    """Raises unless the codec decodes `num_levels` levels of `codebook_size`
    codes, what the model `model_name` makes."""
    if self.module.codebook_size != codebook_size or self.module.num_levels < num_levels:
      raise ValueError(
          f"codec {self.name!r} has {self.module.num_levels} levels of "
          f"{self.module.codebook_size} codes; the {model_name} model makes {num_levels} "
          f"levels of {codebook_size} codes, which it cannot decode")

  def decode(self, codes):
    """int32 codes [B, T, Q'] -> float32 [B, T * hop]; traceable."""
    variables = jax.tree_util.tree_map(jnp.asarray, self._variables)
    return self.module.apply(variables, codes, method="decode")
