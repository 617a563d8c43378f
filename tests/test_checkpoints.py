"""Checkpoints: bit-exact restore, other meshes, resumption, plain-orbax reads."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from soundlm import partitioning
from tests import toy_setup


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  run = toy_setup.make_trainer(workdir, num_steps=8, checkpoint_every=4)
  run.run()
  return workdir, run


def _first_batch(run):
  return partitioning.global_batch(next(run.data), run.mesh)


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_is_bit_exact_and_on_another_mesh(tmp_path, finished_run):
  workdir, run = finished_run
  for mesh_shape, scheme in (((8, 1, 1), "data_parallel"), ((1, 4, 2), "fsdp_tensor")):
    other = toy_setup.make_trainer(workdir, mesh_shape=mesh_shape,
                                   rules=toy_setup.SCHEMES[scheme], num_steps=8)
    state, data_state = other.checkpointer.restore(other.abstract_state(_first_batch(other)))
    assert int(state["step"]) == 8 and data_state["position"] == 8
    _assert_trees_equal(state, run.state)
    query = state["params"]["model"]["block_0"]["attention"]["query"]
    assert query.sharding.mesh.shape == other.mesh.shape
    other.checkpointer.close()


def test_checkpoint_reads_with_plain_orbax(finished_run):
  workdir, run = finished_run
  path = workdir / "checkpoints" / "8"
  state = ocp.StandardCheckpointer().restore(path / "state")
  np.testing.assert_array_equal(
      state["params"]["model"]["logits"]["kernel"],
      np.asarray(run.state["params"]["model"]["logits"]["kernel"]))
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  assert manager.latest_step() == 8
  data = manager.restore(8, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  assert data["processes"][0]["position"] == 8


def test_resumed_run_continues_with_the_same_losses(tmp_path, finished_run):
  workdir, _ = finished_run
  reference = toy_setup.logged(workdir)
  toy_setup.make_trainer(tmp_path, num_steps=4, checkpoint_every=4).run()
  resumed = toy_setup.make_trainer(tmp_path, num_steps=8, checkpoint_every=4)
  resumed.run()
  losses = toy_setup.logged(tmp_path)
  assert sorted(losses) == list(range(1, 9))
  np.testing.assert_allclose([losses[s] for s in range(5, 9)],
                             [reference[s] for s in range(5, 9)], rtol=1e-6)
