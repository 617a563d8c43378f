"""A tiny SoundStorm trained through the shared trainer learns a known code process."""
import json
import os

import gin
import jax
import numpy as np
import pytest

from soundlm import train, trainer
from soundlm.soundstorm.api import SoundStorm
from soundlm.soundstorm.model import SoundStormConfig
from soundlm.soundstorm.synthetic import KnownProcessCodes
from soundlm.soundstorm.task import SoundStormTask

LEVELS, CODES, SEMANTIC = 3, 16, 16


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("soundstorm"))
  gin.clear_config()
  try:
    assert train.main(["--gin_file=gin/runs/soundstorm_tiny.gin",
                       f"--workdir={workdir}"]) == 0
  finally:
    gin.clear_config()
  return workdir


def test_per_level_accuracy_well_above_chance(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if "eval/level_0/accuracy" in r]
  assert evals, records
  # Chance is 1/16; the noise-free optimum is about 0.9.
  for q in range(LEVELS):
    assert evals[-1][f"eval/level_{q}/accuracy"] > 0.6, evals[-1]


def test_restored_model_generates_codes_that_follow_the_process(workdir):
  storm = SoundStorm.load(workdir)
  gin.clear_config()
  assert storm.model.num_levels == LEVELS and storm.model.config.embed_dim == 32
  process = KnownProcessCodes(batch_size=8, num_frames=32, num_levels=LEVELS,
                              codebook_size=CODES, semantic_vocab=SEMANTIC, seed=7)
  batch = process.batch_for(0)
  prompt = batch["codes"][:, :4]
  codes = storm.generate(batch["semantic"], prompt_codes=prompt, rng=0)
  np.testing.assert_array_equal(codes[:, :4], prompt)
  generated = codes[:, 4:]
  semantic = batch["semantic"][:, 2:]
  for q in range(LEVELS):
    expected = process.expected_codes(semantic, generated[..., q - 1] if q else None, q)
    assert (generated[..., q] == expected).mean() > 0.6, q


def test_padded_frames_do_not_affect_the_loss():
  config = SoundStormConfig(semantic_vocab=SEMANTIC, codebook_size=CODES, num_levels=LEVELS,
                            num_layers=1, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
  task = SoundStormTask(config)
  batch = KnownProcessCodes(batch_size=4, num_frames=16, num_levels=LEVELS,
                            codebook_size=CODES, semantic_vocab=SEMANTIC).batch_for(0)
  batch["padding_mask"] = np.arange(16)[None, :] < np.array([[16], [10], [6], [2]])
  variables = jax.jit(task.init)(jax.random.key(0), batch)
  rng = np.random.default_rng(0)
  garbled = dict(batch)
  garbled["codes"] = np.where(batch["padding_mask"][..., None],
                              batch["codes"], rng.integers(0, CODES, batch["codes"].shape))
  garbled["semantic"] = np.where(batch["padding_mask"][:, ::2], batch["semantic"],
                                 rng.integers(0, SEMANTIC, batch["semantic"].shape))
  loss_fn = jax.jit(task.loss_fn)
  losses = [loss_fn(variables, b, jax.random.key(s), 0)[0]
            for s in range(3) for b in (batch, garbled)]
  np.testing.assert_allclose(losses[0::2], losses[1::2], rtol=1e-5)
  assert len(set(np.round(losses[0::2], 5))) > 1  # the masks differ between rngs


class _CorruptCodes(KnownProcessCodes):
  """The process's batches with one code out of the codebook."""

  def make_batch(self, rng):
    batch = super().make_batch(rng)
    batch["codes"][0, 3, 1] = self.codebook_size
    return batch


def test_ids_out_of_the_vocabulary_stop_training_with_a_clear_error(tmp_path):
  config = SoundStormConfig(semantic_vocab=SEMANTIC, codebook_size=CODES, num_levels=LEVELS,
                            num_layers=1, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=32)
  data = _CorruptCodes(batch_size=8, num_frames=16, num_levels=LEVELS, codebook_size=CODES,
                       semantic_vocab=SEMANTIC)
  run = trainer.Trainer(SoundStormTask(config), data, str(tmp_path), num_steps=2)
  with pytest.raises(ValueError, match=rf"batch\['codes'\] ids must lie in \[0, {CODES}\), "
                                       rf"found \[{CODES}\]"):
    run.run()
