"""AudioLM's three stages together, for the generation pipeline.

    lm = AudioLM.random(config='tiny', semantic_vocab=16, codebook_size=16,
                        num_levels=4, num_coarse_levels=2, seed=0)
    semantic = lm.generate_semantic(prompt_semantic, num_frames=750, rng=0)
    coarse = lm.generate_coarse(semantic, prompt_codes, rng=1)    # [B, 2 S, Q']
    codes = lm.generate_fine(coarse, rng=2, prompt_codes=prompt)  # [B, 2 S, Q]

Models and windows come from gin: `gin/audiolm/<config>.gin` for `random`,
each training run's `config.gin` for `from_checkpoints`. With a mesh
(`soundlm.partitioning.make_mesh`) and logical axis rules, parameters are laid
out by their logical names and batches split over the data axes; results
equal a single-device run.
"""
import logging
import os
from typing import Mapping, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from soundlm import partitioning
from soundlm.audiolm import sampling
from soundlm.audiolm.decoding import Decoder, SamplingConfig
from soundlm.audiolm.layouts import STAGES, Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig
from soundlm.audiolm.tasks import AudioLMTask

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin", "audiolm")
SHARED_LAYOUT_FIELDS = ("semantic_vocab", "codebook_size", "num_levels",
                        "num_coarse_levels", "semantic_rate_hz", "acoustic_rate_hz")


def _parse(path: str, skip_unknown: bool = False):
  with gin.unlock_config():
    gin.parse_config_file(path, skip_unknown=skip_unknown)


def _as_key(rng):
  return jax.random.key(int(rng)) if isinstance(rng, (int, np.integer)) else rng


def _abstract_params(model: DecoderLM):
  """Boxed abstract params (logical names kept) of `model`."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))


def _init(model: DecoderLM, rng):
  return nn.meta.unbox(model.init(rng, jnp.zeros((1, 1), jnp.int32))["params"])


# The model is static: one compilation serves all stages of the same shape.
_init_params = jax.jit(_init, static_argnums=0)


class AudioLM:
  """Semantic, coarse and fine stages, each a `Decoder` with its params."""

  def __init__(self, stages: Mapping[str, tuple[Decoder, dict]],
               sampling_config: Optional[SamplingConfig] = None):
    if set(stages) != set(STAGES):
      raise ValueError(f"stages must be exactly {STAGES}, got {sorted(stages)}")
    for stage, (decoder, _) in stages.items():
      if decoder.layout.stage != stage:
        raise ValueError(f"stages[{stage!r}] holds a {decoder.layout.stage!r} decoder")
    first = stages[STAGES[0]][0].layout
    for stage in STAGES[1:]:
      layout = stages[stage][0].layout
      for field in SHARED_LAYOUT_FIELDS:
        if getattr(layout, field) != getattr(first, field):
          raise ValueError(f"stage {stage!r} has {field}={getattr(layout, field)} but "
                           f"stage 'semantic' has {getattr(first, field)}")
    self.stages = {s: (decoder, nn.meta.unbox(params))
                   for s, (decoder, params) in stages.items()}
    self.sampling_config = sampling_config or SamplingConfig()

  @property
  def layout(self) -> Layout:
    """The semantic stage's layout (vocabularies and rates are shared)."""
    return self.stages["semantic"][0].layout

  @staticmethod
  def _build(model_config: ModelConfig, layout: Layout, rng, mesh, rules):
    decoder = Decoder(DecoderLM(model_config, layout.padded_vocab_size), layout, mesh, rules)
    if mesh is None:
      return decoder, _init_params(decoder.model, rng)
    with partitioning.activate(mesh, decoder.rules):
      init = jax.jit(_init, static_argnums=0, out_shardings=decoder.param_shardings)
      return decoder, init(decoder.model, rng)

  @classmethod
  def random(cls, config: str = "tiny", semantic_vocab: int = 1024,
             codebook_size: int = 1024, num_levels: int = 12, num_coarse_levels: int = 4,
             seed: int = 0, *, mesh=None, rules=None) -> "AudioLM":
    """Randomly initialised stages of the named size (gin/audiolm/<config>.gin).

    The gin file gives the model sizes and each stage's crop (its window in
    generation); the vocabularies and levels are the arguments.
    """
    path = os.path.join(GIN_DIR, f"{config}.gin")
    if not os.path.isfile(path):
      known = sorted(f[:-4] for f in os.listdir(GIN_DIR) if f.endswith(".gin")
                     and not f.startswith("train_"))
      raise ValueError(f"config {config!r}: no gin file {path} (known: {known})")
    _parse(path)
    model_config = ModelConfig()
    stages = {}
    for index, stage in enumerate(STAGES):
      with gin.config_scope(stage):
        layout = Layout(stage=stage, semantic_vocab=semantic_vocab,
                        codebook_size=codebook_size, num_levels=num_levels,
                        num_coarse_levels=num_coarse_levels)
      stages[stage] = cls._build(model_config, layout,
                                 jax.random.fold_in(jax.random.key(seed), index), mesh, rules)
    return cls(stages, SamplingConfig())

  @classmethod
  def from_checkpoints(cls, workdirs: Mapping[str, str], step: Optional[int] = None, *,
                       mesh=None, rules=None) -> "AudioLM":
    """Loads the stages trained by `python -m soundlm.train` into `workdirs`
    ({'semantic': dir, 'coarse': dir, 'fine': dir}).

    Each stage's layout and model come from `<dir>/config.gin`, its params
    (group 'model') from the newest checkpoint, or from `step`.
    """
    if set(workdirs) != set(STAGES):
      raise ValueError(f"workdirs must name exactly {STAGES}, got {sorted(workdirs)}")
    stages = {}
    for stage in STAGES:
      workdir = workdirs[stage]
      config_path = os.path.join(workdir, "config.gin")
      if not os.path.isfile(config_path):
        raise ValueError(f"workdirs[{stage!r}]={workdir!r} has no config.gin; expected a "
                         "directory written by `python -m soundlm.train`")
      _parse(config_path, skip_unknown=True)
      task = AudioLMTask(optimizer=None)
      if task.layout.stage != stage:
        raise ValueError(f"workdirs[{stage!r}]={workdir!r} trained the "
                         f"{task.layout.stage!r} stage")
      decoder = Decoder(task.model, task.layout, mesh, rules)
      stages[stage] = decoder, _restore_params(workdir, step, decoder)
    return cls(stages, SamplingConfig())

  def _config(self, config: Optional[SamplingConfig]) -> SamplingConfig:
    return self.sampling_config if config is None else config

  def generate_semantic(self, prompt_tokens, num_frames: int, rng=0, *,
                        config: Optional[SamplingConfig] = None,
                        context_frames: Optional[int] = None) -> np.ndarray:
    """Semantic tokens [B, P + num_frames]: `prompt_tokens` [B, P] continued."""
    decoder, params = self.stages["semantic"]
    return sampling.generate_semantic(decoder, params, prompt_tokens, num_frames,
                                      _as_key(rng), config=self._config(config),
                                      context_frames=context_frames)

  def generate_coarse(self, semantic, prompt_codes=None, rng=0, *,
                      config: Optional[SamplingConfig] = None,
                      context_frames: Optional[int] = None) -> np.ndarray:
    """Coarse codes [B, r * S, Q'] for semantic [B, S], continuing `prompt_codes`."""
    decoder, params = self.stages["coarse"]
    return sampling.generate_coarse(decoder, params, semantic, _as_key(rng),
                                    prompt_codes=prompt_codes, config=self._config(config),
                                    context_frames=context_frames)

  def generate_fine(self, coarse_codes, rng=0, *, prompt_codes=None,
                    config: Optional[SamplingConfig] = None) -> np.ndarray:
    """All levels [B, T, Q] for coarse codes [B, T, >=Q'], keeping `prompt_codes`."""
    decoder, params = self.stages["fine"]
    return sampling.generate_fine(decoder, params, coarse_codes, _as_key(rng),
                                  prompt_codes=prompt_codes, config=self._config(config))


def _restore_params(workdir: str, step: Optional[int], decoder: Decoder):
  """The 'model' parameter group of a trainer checkpoint, on the decoder's mesh."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  try:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise ValueError(f"workdir {workdir!r}: no checkpoint for step {step} "
                       f"(available: {list(manager.all_steps())})")
    abstract = nn.meta.unbox(_abstract_params(decoder.model))["params"]
    if decoder.mesh is None:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      shardings = jax.tree_util.tree_map(lambda _: device, abstract)
    else:
      shardings = decoder.param_shardings
    target = {"params": {"model": abstract}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(
        target, {"params": {"model": shardings}})
    path = os.path.join(manager.directory, str(step), "state")
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
  finally:
    manager.close()
  logging.info("AudioLM stage %s restored from %s (step %d)", decoder.layout.stage, path,
               step)
  return restored["params"]["model"]
