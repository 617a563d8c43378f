"""AudioLM's three stages together, for the generation pipeline.

    lm = AudioLM.random(config='tiny', semantic_vocab=16, codebook_size=16,
                        num_levels=4, num_coarse_levels=2, seed=0)
    semantic = lm.generate_semantic(prompt_semantic, num_frames=750, rng=0)
    coarse = lm.generate_coarse(semantic, prompt_codes, rng=1)    # [B, 2 S, Q']
    codes = lm.generate_fine(coarse, rng=2, prompt_codes=prompt)  # [B, 2 S, Q]

Models and windows come from gin: `gin/audiolm/<config>.gin` for `random`,
each training run's `model.json` for `load`. With a mesh
(`soundlm.partitioning.make_mesh`) and logical axis rules, parameters are laid
out by their logical names and batches split over the data axes; results
equal a single-device run.
"""
from typing import Mapping, Optional

import flax.linen as nn
import numpy as np

from soundlm import models
from soundlm.audiolm import sampling
from soundlm.audiolm.decoding import Decoder, SamplingConfig
from soundlm.audiolm.layouts import STAGES, Layout
from soundlm.audiolm.model import ModelConfig, StageConfig

SHARED_LAYOUT_FIELDS = ("semantic_vocab", "codebook_size", "num_levels",
                        "num_coarse_levels", "semantic_rate_hz", "acoustic_rate_hz")


def _decoder(model: models.Model):
  """(Decoder, params) of a loaded or random stage model."""
  return Decoder(model.module, model.config.layout, model.partitioner), model.variables["params"]


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

  @classmethod
  def random(cls, config: str = "tiny", semantic_vocab: int = 1024,
             codebook_size: int = 1024, num_levels: int = 12, num_coarse_levels: int = 4,
             seed: int = 0, *, mesh=None, rules=None) -> "AudioLM":
    """Randomly initialised stages of a named size (gin/audiolm/<name>.gin) or gin file.

    The gin file gives the model sizes and each stage's crop (its window in
    generation); the vocabularies and levels are the arguments.
    """
    model_config = models.config_from_gin(ModelConfig, "audiolm", config,
                                          selector="soundlm.audiolm.ModelConfig")
    stages = {}
    for index, stage in enumerate(STAGES):
      layout = models.config_from_gin(
          Layout, "audiolm", config, scope=stage, selector="soundlm.audiolm.Layout",
          stage=stage, semantic_vocab=semantic_vocab, codebook_size=codebook_size,
          num_levels=num_levels, num_coarse_levels=num_coarse_levels)
      stages[stage] = _decoder(models.random(StageConfig(model_config, layout),
                                             seed + index, mesh=mesh, rules=rules))
    return cls(stages, SamplingConfig())

  @classmethod
  def load(cls, workdirs: Mapping[str, str], step: Optional[int] = None, *,
           mesh=None, rules=None) -> "AudioLM":
    """The stages trained by `soundlm train` into `workdirs`
    ({'semantic': dir, 'coarse': dir, 'fine': dir}), latest or given step."""
    if set(workdirs) != set(STAGES):
      raise ValueError(f"workdirs must name exactly {STAGES}, got {sorted(workdirs)}")
    stages = {}
    for stage in STAGES:
      model = models.load(workdirs[stage], step, family="audiolm", mesh=mesh, rules=rules)
      if model.config.layout.stage != stage:
        raise ValueError(f"workdirs[{stage!r}]={workdirs[stage]!r} trained the "
                         f"{model.config.layout.stage!r} stage")
      stages[stage] = _decoder(model)
    return cls(stages, SamplingConfig())

  def _config(self, config: Optional[SamplingConfig]) -> SamplingConfig:
    return self.sampling_config if config is None else config

  def generate_semantic(self, prompt_tokens, num_frames: int, rng=0, *,
                        config: Optional[SamplingConfig] = None,
                        context_frames: Optional[int] = None) -> np.ndarray:
    """Semantic tokens [B, P + num_frames]: `prompt_tokens` [B, P] continued."""
    decoder, params = self.stages["semantic"]
    return sampling.generate_semantic(decoder, params, prompt_tokens, num_frames,
                                      rng, config=self._config(config),
                                      context_frames=context_frames)

  def generate_coarse(self, semantic, prompt_codes=None, rng=0, *,
                      config: Optional[SamplingConfig] = None,
                      context_frames: Optional[int] = None) -> np.ndarray:
    """Coarse codes [B, r * S, Q'] for semantic [B, S], continuing `prompt_codes`."""
    decoder, params = self.stages["coarse"]
    return sampling.generate_coarse(decoder, params, semantic, rng,
                                    prompt_codes=prompt_codes, config=self._config(config),
                                    context_frames=context_frames)

  def generate_fine(self, coarse_codes, rng=0, *, prompt_codes=None,
                    config: Optional[SamplingConfig] = None) -> np.ndarray:
    """All levels [B, T, Q] for coarse codes [B, T, >=Q'], keeping `prompt_codes`."""
    decoder, params = self.stages["fine"]
    return sampling.generate_fine(decoder, params, coarse_codes, rng,
                                  prompt_codes=prompt_codes, config=self._config(config))

