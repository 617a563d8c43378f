"""The sharded trainer: mesh-independent losses, accumulation, phases, NaN guard."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from soundlm import toy_lm, trainer
from tests import toy_setup


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  toy_setup.make_trainer(workdir, mesh_shape=(8, 1, 1)).run()
  return toy_setup.logged(workdir)


def test_loss_falls(reference_losses):
  losses = [reference_losses[s] for s in sorted(reference_losses)]
  assert np.mean(losses[-3:]) < losses[0] - 0.2


@pytest.mark.parametrize("mesh_shape, scheme", [
    ((2, 4, 1), "fsdp"), ((2, 2, 2), "fsdp_tensor")])
def test_same_loss_curve_on_every_mesh(tmp_path, reference_losses, mesh_shape, scheme):
  toy_setup.make_trainer(tmp_path, mesh_shape=mesh_shape,
                         rules=toy_setup.SCHEMES[scheme]).run()
  losses = toy_setup.logged(tmp_path)
  assert losses.keys() == reference_losses.keys()
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [reference_losses[s] for s in sorted(losses)], rtol=2e-4)


def test_gradient_accumulation_matches_full_batch(tmp_path, reference_losses):
  toy_setup.make_trainer(tmp_path, microbatches=4).run()
  losses = toy_setup.logged(tmp_path)
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [reference_losses[s] for s in sorted(losses)], rtol=2e-4)


def test_microbatches_keep_every_batch_shard_busy():
  batch = {"x": jnp.arange(8)}
  split = trainer.split_microbatches(batch, 2)["x"]
  np.testing.assert_array_equal(split, [[0, 2, 4, 6], [1, 3, 5, 7]])
  with pytest.raises(ValueError, match="not divisible by 3 micro-batches"):
    trainer.split_microbatches(batch, 3)


class TwoGroupTask:
  """Two parameter groups with separate optimizers; the second starts late and
  reads a non-param collection the first one updates."""

  def init(self, rng, batch):
    del rng, batch
    return {"params": {"a": jnp.ones(3), "b": jnp.ones(3)},
            "counters": {"calls": jnp.zeros((), jnp.int32)}}

  def _loss_a(self, variables, batch, rng, step):
    p = variables["params"]
    loss = jnp.sum((p["a"] - 2.0) ** 2) + 0.0 * jnp.sum(batch["tokens"])
    calls = variables["counters"]["calls"] + 1
    return loss, ({"a_value": p["a"][0]}, {"counters": {"calls": calls}})

  def _loss_b(self, variables, batch, rng, step):
    p = variables["params"]
    return jnp.sum((p["b"] - p["a"]) ** 2), ({}, {})

  def phases(self):
    return [trainer.Phase("a", self._loss_a, optax.sgd(0.1)),
            trainer.Phase("b", self._loss_b, optax.sgd(0.5), start_step=3)]


def test_phases_update_their_own_group_and_honour_start_step(tmp_path):
  run = toy_setup.make_trainer(tmp_path, task=TwoGroupTask(), num_steps=3,
                               microbatches=2)
  run.run()
  params = run.state["params"]
  np.testing.assert_allclose(params["b"], 1.0)  # not active before step 3
  np.testing.assert_allclose(params["a"], 2.0 - 0.8 ** 3, rtol=1e-5)
  assert int(run.state["collections"]["counters"]["calls"]) == 3 * 2

  run = toy_setup.make_trainer(tmp_path / "longer", task=TwoGroupTask(), num_steps=4)
  run.run()
  a3 = 2.0 - 0.8 ** 4
  # Step 4: b moves towards the already-updated a (alternating updates).
  np.testing.assert_allclose(run.state["params"]["b"], 1.0 + (a3 - 1.0), rtol=1e-5)


class ExplodingTask(toy_lm.ToyLanguageModelTask):
  """The loss turns NaN from step 6 on."""

  def _loss(self, variables, batch, rng, step):
    loss, aux = super()._loss(variables, batch, rng, step)
    return jnp.where(step >= 5, jnp.nan, loss), aux


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  task = ExplodingTask(toy_lm.ToyLanguageModel(vocab_size=16, embed_dim=16, num_layers=1,
                                               num_heads=2, mlp_dim=32),
                       trainer.make_optimizer(1e-2, 2, 50))
  run = toy_setup.make_trainer(tmp_path, task=task, checkpoint_every=2)
  with pytest.raises(trainer.NonFiniteLossError, match="step 6.*last good checkpoint: step 4"):
    run.run()
  assert run.checkpointer.all_steps() == [1, 2, 4]
  restored, data_state = run.checkpointer.restore(
      run.abstract_state({"tokens": jnp.zeros((8, 16), jnp.int32)}))
  assert int(restored["step"]) == 4 and data_state["position"] == 4
  leaves = jax.tree_util.tree_leaves(restored["params"])
  assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_a_finite_loss_that_leaves_infinite_parameters_is_refused(tmp_path):
  # Adam moves each parameter by about the learning rate: 1e39 overflows float32
  # while the loss and gradient of step 1 are still finite.
  task = toy_lm.ToyLanguageModelTask(
      toy_lm.ToyLanguageModel(vocab_size=16, embed_dim=16, num_layers=1, num_heads=2,
                              mlp_dim=32),
      trainer.make_optimizer(learning_rate=1e39, warmup_steps=0, clip_norm=None))
  run = toy_setup.make_trainer(tmp_path, task=task, checkpoint_every=1)
  with pytest.raises(trainer.NonFiniteLossError,
                     match="state at step 1.*last good checkpoint: step None"):
    run.run()
  assert run.checkpointer.all_steps() == []


def test_steps_logged_after_the_resumed_checkpoint_are_not_duplicated(tmp_path):
  toy_setup.make_trainer(tmp_path, num_steps=6, checkpoint_every=4).run()
  shutil.rmtree(tmp_path / "checkpoints" / "6")  # killed after logging 5 and 6, before saving 6
  toy_setup.make_trainer(tmp_path, num_steps=8, checkpoint_every=4).run()
  steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")
           if "train/model/loss" in line]
  assert steps == list(range(1, 9))
