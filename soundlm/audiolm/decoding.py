"""KV-cached, batched, jitted autoregressive decoding for one stage.

`Decoder.generate` runs one `jax.jit`: allocate the KV cache, prefill it with
the prompt in one pass, then a `lax.scan` that feeds one token per step and
samples the next. Each position may only emit the ids that `Layout` allows
there (the right RVQ level, never a semantic id in an acoustic slot, never
PAD or START): everything else gets -inf before temperature, top-k and top-p.

With a mesh, parameters follow the logical partitioning rules (e.g. heads,
feed-forward units and vocabulary over 'tensor'), the batch and the KV cache
are split over ('data', 'fsdp') and the cache's heads over whatever 'heads'
maps to. Each row has its own key and step s draws with `fold_in(key, s)`
(partitionable threefry), so a sharded run equals a single-device one and a
row's tokens never depend on the other rows of its batch.
"""
import dataclasses
import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from soundlm import partitioning
from soundlm import rng as rng_lib
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM
from soundlm.layers import stack

CACHE_AXES = {"cached_key": ("batch", "length", "heads", "kv"),
              "cached_value": ("batch", "length", "heads", "kv")}


@gin.configurable(module="soundlm.audiolm")
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def mask_invalid(logits, low, high):
  """-inf outside [low, high) on the last axis."""
  ids = jnp.arange(logits.shape[-1])
  return jnp.where((ids >= low) & (ids < high), logits, -jnp.inf)


def sample_token(logits, keys, low, high, config: SamplingConfig):
  """One id per row of `logits` [B, V], drawn from [low, high) only, row b
  with its own key `keys[b]`."""
  logits = mask_invalid(logits.astype(jnp.float32), low, high)
  if config.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / config.temperature
  if config.top_k == 0 and config.top_p == 1:
    return rng_lib.categorical_rows(keys, logits).astype(jnp.int32)
  if config.top_k:
    values, ids = jax.lax.top_k(logits, min(config.top_k, logits.shape[-1]))
  else:
    ids = jnp.argsort(-logits, axis=-1)
    values = jnp.take_along_axis(logits, ids, axis=-1)
  if config.top_p < 1:
    probs = jax.nn.softmax(values, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the top id always).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < config.top_p
    values = jnp.where(keep, values, -jnp.inf)
  choice = rng_lib.categorical_rows(keys, values)
  return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


class Decoder:
  """Generates target tokens of one stage from a prompt of model-sequence ids."""

  def __init__(self, model: DecoderLM, layout: Layout,
               partitioner: partitioning.Partitioner | None = None):
    if model.vocab_size < layout.vocab_size:
      raise ValueError(f"model vocab_size {model.vocab_size} is smaller than the "
                       f"{layout.stage} layout's {layout.vocab_size} ids")
    self.model, self.layout = model, layout
    self.partitioner = partitioner or partitioning.Partitioner()
    self.mesh = self.partitioner.mesh

  @functools.cached_property
  def param_shardings(self):
    """Shardings of the (unboxed) params: by the partitioner's rules."""
    abstract = jax.eval_shape(self.model.init, jax.random.key(0),
                              jnp.zeros((1, 1), jnp.int32))
    return self.partitioner.shardings(abstract)["params"]

  def init_cache(self, params, batch_size: int, length: int):
    """An empty KV cache for `length` tokens (position 0).

    Applying the model to a dummy input of that length creates the cache
    variables; the dummy forward pass itself is dead code that XLA drops.
    """
    _, variables = self.model.apply({"params": params},
                                    jnp.zeros((batch_size, length), jnp.int32),
                                    decode=True, mutable=["cache"])
    return self._constrain_cache(variables["cache"])

  def _constrain_cache(self, cache):
    if self.mesh is None:
      return cache

    def constrain(path, leaf):
      name = path[-1].key
      if name not in CACHE_AXES:
        return leaf
      # A scanned stack's cache has a leading layer axis.
      axes = CACHE_AXES[name]
      axes = (stack.LAYER_AXIS, *axes) if leaf.ndim == len(axes) + 1 else axes
      return nn.with_logical_constraint(leaf, axes)
    return jax.tree_util.tree_map_with_path(constrain, cache)

  def _step(self, params, cache, tokens):
    logits, variables = self.model.apply({"params": params, "cache": cache}, tokens,
                                         decode=True, mutable=["cache"])
    return logits[:, -1], self._constrain_cache(variables["cache"])

  def decode_loop(self, params, cache, logits, keys, target_offset, num_steps: int,
                  config: SamplingConfig):
    """Samples `num_steps` tokens; `logits` [B, V] predict the first of them.

    The first token is target position `target_offset`; returns [B, num_steps].
    Row b's token at step s is drawn with `fold_in(keys[b], s)`.
    """
    def sample(step, step_logits):
      low, high = self.layout.valid_range(target_offset + step)
      return sample_token(step_logits, rng_lib.fold_rows(keys, step), low, high, config)

    first = sample(0, logits)

    def body(carry, step):
      cache, token = carry
      step_logits, cache = self._step(params, cache, token[:, None])
      token = sample(step, step_logits)
      return (cache, token), token

    _, rest = jax.lax.scan(body, (cache, first), jnp.arange(1, num_steps))
    return jnp.concatenate([first[:, None], rest.T], axis=1)

  def sample(self, params, prompt, keys, target_offset, num_steps: int,
             config: SamplingConfig):
    """`generate` inside a caller's own jit (a trainer's evaluation): prompt
    [B, P] int32, keys [B] (one per row), unboxed params; no placement or
    checks. Returns int32 [B, num_steps]."""
    cache = self.init_cache(params, prompt.shape[0], prompt.shape[1] + num_steps)
    logits, cache = self._step(params, cache, prompt)
    return self.decode_loop(params, cache, logits, keys, target_offset, num_steps, config)

  def generate(self, params, prompt, rng, *, num_steps: int, target_offset=0,
               config: SamplingConfig = SamplingConfig()):
    """Continues `prompt` [B, P] (model-sequence ids, P >= 1) by `num_steps` ids.

    `target_offset` is the target position of the first new token (the number
    of targets already in the prompt). `rng`: a seed, one key or one key per row
    (`soundlm.rng.row_keys`). Returns int32 [B, num_steps].
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    params = nn.meta.unbox(params)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
      raise ValueError(f"prompt must be [batch, length>=1], got shape {prompt.shape}")
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    inputs, valid = self.partitioner.place_batch(
        {"prompt": prompt, "keys": rng_lib.row_keys(rng, prompt.shape[0])})
    with self.partitioner.activate():
      params = jax.device_put(params, self.param_shardings)
      return self._jitted(params, inputs["prompt"], inputs["keys"],
                          jnp.int32(target_offset), num_steps, config)[valid]

  @functools.cached_property
  def _jitted(self):
    kwargs = {}
    if self.mesh is not None:
      replicated = NamedSharding(self.mesh, PartitionSpec())
      kwargs = dict(in_shardings=(self.param_shardings,
                                  partitioning.batch_sharding(self.mesh, 2),
                                  partitioning.batch_sharding(self.mesh, 1), replicated),
                    out_shardings=partitioning.batch_sharding(self.mesh, 2))
    return jax.jit(self.sample, static_argnums=(4, 5), **kwargs)
