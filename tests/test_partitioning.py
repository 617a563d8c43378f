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


def test_place_batch_splits_a_divisible_batch_and_replicates_another():
  mesh = partitioning.make_mesh(2, 2, 2)
  x = np.arange(24).reshape(8, 3)
  split = partitioning.place_batch(x, mesh)
  assert split.sharding.spec == P(partitioning.BATCH_AXES, None)
  assert split.addressable_shards[0].data.shape == (2, 3)
  odd = partitioning.place_batch(x[:3], mesh)
  assert odd.sharding.is_fully_replicated and odd.addressable_shards[0].data.shape == (3, 3)
  alone = partitioning.place_batch(x, None)
  assert len(alone.devices()) == 1
  for placed, expected in ((split, x), (odd, x[:3]), (alone, x)):
    np.testing.assert_array_equal(np.asarray(placed), expected)
