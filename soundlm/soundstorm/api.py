"""SoundStorm for the generation pipeline: build or load a model, then generate codes.

    storm = SoundStorm.random(config='tiny', semantic_vocab=16, codebook_size=16,
                              num_levels=4, seed=0)
    codes = storm.generate(semantic, num_frames=2 * semantic.shape[1],
                           prompt_codes=prompt, rng=0)   # int32 [B, T50, Q]

With a mesh (`soundlm.partitioning.make_mesh`) and logical axis rules, the
parameters are laid out by their logical names and the batch is split over
the data axes; the result equals a single-device run.
"""
import logging
import os
from typing import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from soundlm import partitioning
from soundlm.soundstorm import decoding
from soundlm.soundstorm import schedule as schedule_lib
from soundlm.soundstorm.model import SoundStormModel

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin", "soundstorm")


def model_from_gin(config: str, skip_unknown: bool = False,
                   **overrides) -> SoundStormModel:
  """A model from `gin/soundstorm/<config>.gin` (or a gin file path).

  The file's `SoundStormModel` bindings become part of the global gin config;
  `overrides` take precedence over them. `skip_unknown` ignores bindings of
  configurables that are not imported (a training run's full config).
  """
  path = config if config.endswith(".gin") else os.path.join(GIN_DIR, f"{config}.gin")
  if not os.path.isfile(path):
    available = sorted(f[:-4] for f in os.listdir(GIN_DIR) if f.endswith(".gin"))
    raise ValueError(f"config {config!r}: no gin file {path} (known: {available})")
  with gin.unlock_config():
    gin.parse_config_file(path, skip_unknown=skip_unknown)
  return SoundStormModel(**overrides)


def abstract_variables(model: SoundStormModel):
  """Shapes of the model's variables with their logical annotations."""
  semantic = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  codes = jax.ShapeDtypeStruct((1, model.frames_per_semantic_token, model.num_levels),
                               jnp.int32)
  return jax.eval_shape(lambda r, s, c: model.init(r, s, c, level=0),
                        jax.random.key(0), semantic, codes)


def _as_key(rng):
  if isinstance(rng, (int, np.integer)):
    return jax.random.key(int(rng))
  return rng


def _check_ids(name: str, values: np.ndarray, limit: int):
  if values.size and (values.min() < 0 or values.max() >= limit):
    raise ValueError(f"{name} ids must be in [0, {limit}), got range "
                     f"[{values.min()}, {values.max()}]")


class SoundStorm:
  """A SoundStorm model with its variables, optionally laid out over a mesh."""

  def __init__(self, model: SoundStormModel, variables, *, mesh=None, rules=None):
    self.model = model
    self.mesh = mesh
    self.rules = tuple(rules) if rules is not None else partitioning.logical_axis_rules()
    self.variables = nn.meta.unbox(variables)
    if mesh is not None:
      self.variables = jax.device_put(self.variables, self._variable_shardings())

  def _variable_shardings(self):
    return partitioning.logical_to_shardings(abstract_variables(self.model), self.mesh,
                                             self.rules)

  @classmethod
  def random(cls, config: str = "tiny", semantic_vocab: int = 1024,
             codebook_size: int = 1024, num_levels: int = 12, seed: int = 0, *,
             mesh=None, rules=None, **overrides) -> "SoundStorm":
    """Randomly initialised model of the named size (gin/soundstorm/<config>.gin)."""
    model = model_from_gin(config, semantic_vocab=semantic_vocab,
                           codebook_size=codebook_size, num_levels=num_levels,
                           **overrides)
    abstract = abstract_variables(model)
    semantic = jnp.zeros((1, 1), jnp.int32)
    codes = jnp.zeros((1, model.frames_per_semantic_token, num_levels), jnp.int32)
    init = lambda r: nn.meta.unbox(model.init(r, semantic, codes, level=0))  # noqa: E731
    if mesh is not None:
      rules = tuple(rules) if rules is not None else partitioning.logical_axis_rules()
      shardings = partitioning.logical_to_shardings(abstract, mesh, rules)
      with partitioning.activate(mesh, rules):
        variables = jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
    else:
      variables = jax.jit(init)(jax.random.key(seed))
    return cls(model, variables, mesh=mesh, rules=rules)

  @classmethod
  def from_checkpoint(cls, workdir: str, step: int | None = None, *, mesh=None,
                      rules=None) -> "SoundStorm":
    """Loads the model trained by `python -m soundlm.train` into `workdir`.

    The model is rebuilt from `<workdir>/config.gin` and its parameters (group
    'model') are read from the newest checkpoint, or from `step`.
    """
    config_path = os.path.join(workdir, "config.gin")
    if not os.path.isfile(config_path):
      raise ValueError(f"workdir {workdir!r} has no config.gin; expected a "
                       "directory written by `python -m soundlm.train`")
    model = model_from_gin(config_path, skip_unknown=True)
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise ValueError(f"workdir {workdir!r}: no checkpoint for step {step} "
                       f"(available: {list(manager.all_steps())})")
    abstract = nn.meta.unbox(abstract_variables(model))
    if mesh is not None:
      rules = tuple(rules) if rules is not None else partitioning.logical_axis_rules()
      shardings = partitioning.logical_to_shardings(abstract_variables(model), mesh, rules)
    else:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      shardings = jax.tree_util.tree_map(lambda _: device, abstract)
    target = {"params": {"model": abstract["params"]}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(
        target, {"params": {"model": shardings["params"]}})
    path = os.path.join(manager.directory, str(step), "state")
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
    manager.close()
    logging.info("SoundStorm restored from %s (step %d)", path, step)
    return cls(model, {"params": restored["params"]["model"]}, mesh=mesh, rules=rules)

  def num_params(self) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(self.variables["params"]))

  def generate(self, semantic, num_frames: int | None = None, prompt_codes=None,
               rng=0, schedule: Sequence[int] | None = None, temperature=1.0,
               choice_temperature: float = 4.5, return_forward_passes: bool = False):
    """Codes int32 [B, num_frames, Q] for semantic tokens int32 [B, T25].

    num_frames defaults to T25 x frames_per_semantic_token and must equal it.
    prompt_codes int32 [B, Tp, Q] are kept as the first Tp frames and condition
    the rest. schedule: iterations per level, default (16, 1, ..., 1).
    temperature: > 0, a scalar or one per level.
    """
    model = self.model
    semantic = np.asarray(semantic)
    if semantic.ndim != 2 or not np.issubdtype(semantic.dtype, np.integer):
      raise ValueError(f"semantic must be integer [batch, time], got "
                       f"{semantic.dtype} {semantic.shape}")
    _check_ids("semantic", semantic, model.semantic_vocab)
    if num_frames is None:
      num_frames = semantic.shape[1] * model.frames_per_semantic_token
    if prompt_codes is not None:
      prompt_codes = np.asarray(prompt_codes)
      if not np.issubdtype(prompt_codes.dtype, np.integer):
        raise ValueError(f"prompt_codes must be integer, got {prompt_codes.dtype}")
      _check_ids("prompt_codes", prompt_codes, model.codebook_size)
    temperature = np.asarray(temperature, np.float32)
    if temperature.ndim > 1 or temperature.size not in (1, model.num_levels) or (
        temperature <= 0).any():
      raise ValueError(f"temperature must be > 0, a scalar or {model.num_levels} "
                       f"values, got {temperature}")
    schedule = schedule_lib.paper_schedule(model.num_levels) if schedule is None else schedule
    decoding.check_inputs(model, semantic.shape, num_frames,
                          None if prompt_codes is None else prompt_codes.shape, schedule)
    semantic = partitioning.place_batch(semantic.astype(np.int32), self.mesh)
    if prompt_codes is not None:
      prompt_codes = partitioning.place_batch(prompt_codes.astype(np.int32), self.mesh)
    run = lambda: decoding.decode(  # noqa: E731
        model, self.variables, semantic, prompt_codes, _as_key(rng), schedule=schedule,
        num_frames=num_frames, temperature=temperature,
        choice_temperature=choice_temperature)
    if self.mesh is not None:
      with partitioning.activate(self.mesh, self.rules):
        result = run()
    else:
      result = run()
    codes = np.asarray(jax.device_get(result.codes))
    if return_forward_passes:
      return codes, int(result.forward_passes)
    return codes
