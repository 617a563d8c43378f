"""Meshes, logical rules and the real layout of sharded train state."""
import os

import gin
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from soundlm import partitioning
from soundlm import gin_utils
from tests import toy_setup


def test_mesh_fills_the_remaining_axis_and_rejects_bad_shapes():
  assert partitioning.make_mesh(-1, 2, 2).devices.shape == (2, 2, 2)
  assert partitioning.make_mesh(2, -1, 1).shape == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="does not divide"):
    partitioning.make_mesh(3, -1, 1)
  with pytest.raises(ValueError, match="at most one axis"):
    partitioning.make_mesh(-1, -1, 2)
  with pytest.raises(ValueError, match="uses 4 devices but 8"):
    partitioning.make_mesh(2, 2, 1)


def _scheme_rules(name):
  gin.clear_config()
  gin_utils.parse([f"gin/partitioning/{name}.gin"], [])
  mesh = partitioning.make_mesh()
  rules = partitioning.logical_axis_rules()
  gin.clear_config()
  return mesh, rules


@pytest.mark.parametrize("scheme, mesh_shape, embed_axis, heads_axis", [
    ("data_parallel", (8, 1, 1), None, None),
    ("fsdp", (1, 8, 1), "fsdp", None),
    ("fsdp_tensor", (1, 4, 2), "fsdp", "tensor"),
])
def test_gin_schemes_lay_out_params_and_optimizer_state(tmp_path, scheme, mesh_shape,
                                                        embed_axis, heads_axis):
  mesh, rules = _scheme_rules(scheme)
  assert tuple(mesh.devices.shape) == mesh_shape
  trainer = toy_setup.make_trainer(tmp_path, mesh_shape=mesh_shape, rules=rules)
  batch = partitioning.global_batch(next(trainer.data), trainer.mesh)
  state, _ = trainer.create_state(batch)
  block = state["params"]["model"]["block_0"]
  query = block["attention"]["query"]
  assert query.sharding.spec == P(embed_axis, heads_axis, None)
  assert block["mlp"]["wi"]["kernel"].sharding.spec == P(embed_axis, heads_axis)
  adam_mu = state["opt_state"]["model"][1][0].mu["block_0"]["attention"]["query"]
  assert adam_mu.sharding.spec == query.sharding.spec
  # The layout is real: each device holds only its shard.
  shard_shape = query.addressable_shards[0].data.shape
  expected = tuple(d // (mesh.shape[a] if a else 1)
                   for d, a in zip(query.shape, (embed_axis, heads_axis, None)))
  assert shard_shape == expected
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)


def test_indivisible_dimensions_are_replicated():
  mesh = partitioning.make_mesh(1, 8, 1)
  spec = partitioning._fit_spec(P("fsdp", None), (12, 4), mesh)
  assert spec == P(None, None)


def test_global_batch_splits_over_batch_axes():
  mesh = partitioning.make_mesh(2, 2, 2)
  batch = partitioning.global_batch({"x": np.arange(16).reshape(8, 2)}, mesh)
  assert batch["x"].shape == (8, 2)
  assert batch["x"].addressable_shards[0].data.shape == (2, 2)
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(16).reshape(8, 2))


def test_partitioner_splits_batches_padding_the_ones_that_do_not_divide():
  partitioner = partitioning.Partitioner.of(partitioning.make_mesh(2, 2, 2))
  x = np.arange(24).reshape(8, 3)
  split, valid = partitioner.place_batch({"x": x, "y": x[:, 0]})
  assert split["x"].sharding.spec == P(partitioning.BATCH_AXES, None)
  assert split["x"].addressable_shards[0].data.shape == (2, 3) and valid.all()
  odd, valid = partitioner.place_batch(x[:3])
  assert odd.shape == (4, 3) and valid.tolist() == [True, True, True, False]
  np.testing.assert_array_equal(np.asarray(odd)[3], x[2])  # padded with the last row
  alone, valid = partitioning.Partitioner().place_batch(x[:3])
  assert len(alone.devices()) == 1 and valid.all()
  for placed, mask, expected in ((split["x"], slice(None), x), (odd, slice(0, 3), x[:3]),
                                 (alone, slice(None), x[:3])):
    np.testing.assert_array_equal(np.asarray(placed)[mask], expected)
  with pytest.raises(ValueError, match="disagree on their leading dimension"):
    partitioner.place_batch({"x": x, "y": x[:3]})
