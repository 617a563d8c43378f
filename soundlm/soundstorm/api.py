"""SoundStorm for the generation pipeline: build or load a model, then generate codes.

    storm = SoundStorm.random(config='tiny', semantic_vocab=16, codebook_size=16,
                              num_levels=4, seed=0)
    codes = storm.generate(semantic, num_frames=2 * semantic.shape[1],
                           prompt_codes=prompt, rng=0)   # int32 [B, T50, Q]

With a mesh (`soundlm.partitioning.make_mesh`) and logical axis rules, the
parameters are laid out by their logical names and the batch is split over
the data axes; the result equals a single-device run.
"""
import dataclasses
from typing import Sequence

import jax
import numpy as np

from soundlm import models
from soundlm import rng as rng_lib
from soundlm.layers.ids import check_ids
from soundlm.soundstorm import decoding
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel


class SoundStorm:
  """A SoundStorm model with its variables, laid out by a partitioner."""

  def __init__(self, model: models.Model):
    if not isinstance(model.config, SoundStormConfig):
      raise TypeError(f"expected a SoundStorm model, got {type(model.config).__name__}")
    self.built = model
    self.model: SoundStormModel = model.module
    self.variables = model.variables
    self.partitioner = model.partitioner

  def placed(self, mesh=None, rules=None) -> "SoundStorm":
    """This model with its parameters laid out over `mesh` by `rules`."""
    return SoundStorm(models.place(self.built, mesh, rules))

  @classmethod
  def random(cls, config: str | SoundStormConfig = "tiny", semantic_vocab: int = 1024,
             codebook_size: int = 1024, num_levels: int = 12, seed: int = 0, *,
             mesh=None, rules=None, **overrides) -> "SoundStorm":
    """Randomly initialised model of a named size (gin/soundstorm/<name>.gin), a
    gin file or a config, for the given token space; `overrides` replace other
    config fields."""
    overrides.update(semantic_vocab=semantic_vocab, codebook_size=codebook_size,
                     num_levels=num_levels)
    if isinstance(config, SoundStormConfig):
      config = dataclasses.replace(config, **overrides)
    else:
      config = models.config_from_gin(SoundStormConfig, "soundstorm", config, **overrides)
    return cls(models.random(config, seed, mesh=mesh, rules=rules))

  @classmethod
  def load(cls, workdir: str, step: int | None = None, *, mesh=None,
           rules=None) -> "SoundStorm":
    """The model trained by `soundlm train` in `workdir` (latest or given step)."""
    return cls(models.load(workdir, step, family="soundstorm", mesh=mesh, rules=rules))

  def num_params(self) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(self.variables["params"]))

  def generate(self, semantic, num_frames: int | None = None, prompt_codes=None,
               rng=0, schedule: Sequence[int] | None = None, temperature=1.0,
               choice_temperature: float = 4.5, return_forward_passes: bool = False):
    """Codes int32 [B, num_frames, Q] for semantic tokens int32 [B, T25].

    num_frames defaults to T25 x frames_per_semantic_token and must equal it.
    prompt_codes int32 [B, Tp, Q] are kept as the first Tp frames and condition
    the rest. rng: a seed, one key, or one key per example (`soundlm.rng`): an
    example's codes depend only on its own key, never on its batch.
    schedule: iterations per level, default (16, 1, ..., 1).
    temperature: > 0, a scalar or one per level.
    """
    model = self.model
    semantic = np.asarray(semantic)
    if semantic.ndim != 2 or not np.issubdtype(semantic.dtype, np.integer):
      raise ValueError(f"semantic must be integer [batch, time], got "
                       f"{semantic.dtype} {semantic.shape}")
    check_ids("semantic", semantic, model.semantic_vocab)
    if num_frames is None:
      num_frames = semantic.shape[1] * model.frames_per_semantic_token
    if prompt_codes is not None:
      prompt_codes = np.asarray(prompt_codes)
      if not np.issubdtype(prompt_codes.dtype, np.integer):
        raise ValueError(f"prompt_codes must be integer, got {prompt_codes.dtype}")
      check_ids("prompt_codes", prompt_codes, model.codebook_size)
    temperature = np.asarray(temperature, np.float32)
    if temperature.ndim > 1 or temperature.size not in (1, model.num_levels) or (
        temperature <= 0).any():
      raise ValueError(f"temperature must be > 0, a scalar or {model.num_levels} "
                       f"values, got {temperature}")
    schedule = schedule_lib.paper_schedule(model.num_levels) if schedule is None else schedule
    decoding.check_inputs(model, semantic.shape, num_frames,
                          None if prompt_codes is None else prompt_codes.shape, schedule)
    inputs = {"semantic": semantic.astype(np.int32),
              "keys": rng_lib.row_keys(rng, semantic.shape[0])}
    if prompt_codes is not None:
      inputs["prompt_codes"] = prompt_codes.astype(np.int32)
    inputs, valid = self.partitioner.place_batch(inputs)
    with self.partitioner.activate():
      result = decoding.decode(
          model, self.variables, inputs["semantic"], inputs.get("prompt_codes"),
          inputs["keys"], schedule=schedule, num_frames=num_frames,
          temperature=temperature, choice_temperature=choice_temperature)
    codes = np.asarray(jax.device_get(result.codes))[valid]
    if return_forward_passes:
      return codes, int(result.forward_passes)
    return codes
