"""Level-by-level MaskGIT decoding as one jitted function.

Levels are filled coarse to fine (a `lax.scan` over levels); level q runs
`schedule[q]` iterations (a `lax.fori_loop`). Each iteration samples every
masked token of level q, scores the samples by their log-probability plus
Gumbel noise annealed to zero, keeps the most confident ones and re-masks the
rest so that the masked count follows the cosine schedule; the last iteration
of a level picks the most likely token. Frames of the acoustic prompt keep
their codes throughout and condition every level.
"""
import functools
from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from soundlm import rng as rng_lib
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.model import SoundStormModel


@flax.struct.dataclass
class DecodeResult:
  codes: jax.Array           # int32 [B, T, Q]
  forward_passes: jax.Array  # int32 []: model applications actually executed


def check_inputs(model: SoundStormModel, semantic_shape, num_frames: int,
                 prompt_shape, schedule: Sequence[int]) -> tuple[int, ...]:
  """Validates shapes before tracing; returns the schedule as a tuple of ints."""
  counts = schedule_lib.check_schedule(schedule, model.num_levels)
  if len(semantic_shape) != 2:
    raise ValueError(f"semantic must be [batch, time], got shape {semantic_shape}")
  expected = semantic_shape[1] * model.frames_per_semantic_token
  if expected != num_frames:
    raise ValueError(
        f"num_frames = {num_frames} does not align with semantic length "
        f"{semantic_shape[1]} ({model.frames_per_semantic_token} codec frames "
        f"per semantic token gives {expected})")
  if prompt_shape is not None:
    if len(prompt_shape) != 3 or prompt_shape[2] != model.num_levels:
      raise ValueError(f"prompt_codes must be [batch, frames, {model.num_levels}], "
                       f"got shape {prompt_shape}")
    if prompt_shape[0] != semantic_shape[0]:
      raise ValueError(f"prompt_codes batch {prompt_shape[0]} != semantic batch "
                       f"{semantic_shape[0]}")
    if prompt_shape[1] > num_frames:
      raise ValueError(f"prompt_codes has {prompt_shape[1]} frames, longer than "
                       f"the output's num_frames = {num_frames}")
  return counts


def decode(model: SoundStormModel, variables, semantic, prompt_codes, rng, *,
           schedule: Sequence[int], num_frames: int, temperature=1.0,
           choice_temperature=4.5) -> DecodeResult:
  """Generates codes [B, num_frames, Q] from semantic tokens [B, num_frames / r].

  rng: a seed, one key, or keys [B] (one per example: see `soundlm.rng`).
  prompt_codes: int32 [B, Tp, Q] or None; frames < Tp are returned unchanged.
  temperature: sampling temperature, a scalar or one per level (> 0).
  choice_temperature: scale of the Gumbel noise on confidences at the first
  iteration of a level, annealed linearly to zero at its last.
  """
  prompt_shape = None if prompt_codes is None else tuple(prompt_codes.shape)
  counts = check_inputs(model, tuple(semantic.shape), num_frames, prompt_shape,
                        schedule)
  if prompt_codes is None:
    prompt_codes = jnp.zeros((semantic.shape[0], 0, model.num_levels), jnp.int32)
  temperature = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32),
                                 (model.num_levels,))
  keys = rng_lib.row_keys(rng, semantic.shape[0])
  return _decode(model, num_frames, variables, semantic, prompt_codes, keys,
                 jnp.asarray(counts, jnp.int32), temperature,
                 jnp.asarray(choice_temperature, jnp.float32))


# The schedule is traced (a while loop per level), so changing it does not recompile.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode(model, num_frames, variables, semantic, prompt_codes, keys, schedule,
            temperature, choice_temperature):
  batch = semantic.shape[0]
  num_levels = model.num_levels
  prompt_len = prompt_codes.shape[1]
  num_masked = num_frames - prompt_len
  codes = jnp.full((batch, num_frames, num_levels), model.mask_id, jnp.int32)
  codes = lax.dynamic_update_slice(codes, prompt_codes.astype(jnp.int32), (0, 0, 0))
  codes = nn.with_logical_constraint(codes, ("batch", "length", "levels"))

  def level_step(carry, per_level):
    codes, passes = carry
    level, iterations, level_temperature, keys = per_level

    def iteration(i, state):
      codes, still_masked, passes = state
      logits = model.apply(variables, semantic, codes, level=level) / level_temperature
      k_sample, k_noise = rng_lib.split_rows(rng_lib.fold_rows(keys, i), 2)
      current = lax.dynamic_index_in_dim(codes, level, axis=2, keepdims=False)
      is_masked = current == model.mask_id
      last = i + 1 >= iterations
      choice = jnp.where(last, jnp.argmax(logits, axis=-1),
                         rng_lib.categorical_rows(k_sample, logits))
      log_probs = jax.nn.log_softmax(logits)
      score = jnp.take_along_axis(log_probs, choice[..., None], axis=-1)[..., 0]
      anneal = 1.0 - (i + 1).astype(jnp.float32) / iterations.astype(jnp.float32)
      score = score + choice_temperature * anneal * rng_lib.gumbel_rows(k_noise,
                                                                       score.shape[1:])
      score = jnp.where(is_masked, score, jnp.inf)
      keep_masked = schedule_lib.remaining_masked(num_masked, i, iterations, still_masked)
      # The `keep_masked` least confident sampled tokens are masked again.
      rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)
      remask = rank < keep_masked
      updated = jnp.where(remask, model.mask_id, jnp.where(is_masked, choice, current))
      codes = lax.dynamic_update_index_in_dim(codes, updated.astype(jnp.int32), level,
                                              axis=2)
      return codes, keep_masked, passes + 1

    codes, _, passes = lax.fori_loop(0, iterations, iteration,
                                     (codes, jnp.int32(num_masked), passes))
    return (codes, passes), None

  per_level = (jnp.arange(num_levels, dtype=jnp.int32), schedule, temperature,
               rng_lib.split_rows(keys, num_levels))
  (codes, passes), _ = lax.scan(level_step, (codes, jnp.int32(0)), per_level)
  return DecodeResult(codes=codes, forward_passes=passes)
