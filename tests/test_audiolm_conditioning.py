"""Synthetic stages whose targets depend on the conditioning: a stage that
learns them is measurably worse when its conditioning is shuffled or zeroed,
so a broken conditioning path or window alignment cannot reach the floor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm import partitioning, trainer
from soundlm.audiolm import layouts
from soundlm.audiolm.model import ModelConfig
from soundlm.audiolm.synthetic import MarkovStageData
from soundlm.audiolm.tasks import AudioLMTask

LAYOUT = layouts.Layout("coarse", semantic_vocab=8, codebook_size=8, num_levels=4,
                        num_coarse_levels=2, crop_seconds=0.32)
MODEL = ModelConfig(num_layers=2, num_heads=4, head_dim=8, embed_dim=32, mlp_dim=64,
                    dropout_rate=0.0, num_buckets=16, max_distance=64)


def test_conditioned_targets_follow_their_conditioning_and_keep_an_exact_entropy():
  plain = MarkovStageData(LAYOUT, batch_size=4)
  data = MarkovStageData(LAYOUT, batch_size=4, conditioned=True)
  batch = data.make_batch(np.random.default_rng(0))["tokens"]
  semantic = layouts.semantic_from_ids(batch[:, :LAYOUT.crop_semantic_frames],
                                       LAYOUT.semantic_vocab)
  codes = LAYOUT.targets_from_ids(batch[:, LAYOUT.crop_semantic_frames + 1:])
  np.testing.assert_array_equal(codes[:, :, 0],
                                data.table[np.repeat(semantic, LAYOUT.frames_per_semantic, 1)])
  # Half the targets cost nothing given the conditioning: the rest follow the chain.
  assert 0 < data.entropy() < plain.entropy()
  with pytest.raises(ValueError, match="needs a stage with conditioning"):
    MarkovStageData(layouts.Layout("semantic", semantic_vocab=8, crop_seconds=0.32),
                    conditioned=True)


def test_a_stage_trained_on_conditioned_targets_needs_its_conditioning(tmp_path):
  steps = 200
  task = AudioLMTask(LAYOUT, MODEL, trainer.make_optimizer(3e-3, 20, steps, weight_decay=0.0))
  run = trainer.Trainer(task, MarkovStageData(LAYOUT, batch_size=16, conditioned=True),
                        str(tmp_path), num_steps=steps, checkpoint_every=steps,
                        log_every=steps, async_checkpoints=False,
                        mesh=partitioning.make_mesh(devices=jax.devices()[:1]))
  run.run()
  tokens = MarkovStageData(LAYOUT, batch_size=64, seed=1, conditioned=True).make_batch(
      np.random.default_rng(5))["tokens"]
  semantic = slice(0, LAYOUT.crop_semantic_frames)
  shuffled, zeroed = tokens.copy(), tokens.copy()
  shuffled[:, semantic] = tokens[np.random.default_rng(1).permutation(64), semantic]
  zeroed[:, semantic] = layouts.NUM_SPECIAL  # every semantic token 0

  def loss(t):
    return float(task.evaluate({"params": run.state["params"]}, {"tokens": jnp.asarray(t)},
                               jax.random.key(0))["loss"])

  right = loss(tokens)
  assert right < np.log(8) - 0.3  # it learned something beyond guessing
  assert loss(shuffled) > right + 0.3
  assert loss(zeroed) > right + 0.3
