"""Device meshes, logical axis rules and the shardings derived from them.

Parameters and activations are annotated with logical axis names (`embed`,
`mlp`, `heads`, ...). A list of rules, chosen in a gin file under
`gin/partitioning/`, maps those names onto the mesh axes
('data', 'fsdp', 'tensor'); everything else here follows from that mapping.
"""
import contextlib
import logging
import math
import os
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Pure data parallelism: every parameter replicated, the batch split over all devices.
DATA_PARALLEL_RULES = (
    ("batch", BATCH_AXES),
    ("length", None), ("embed", None), ("mlp", None), ("heads", None),
    ("kv", None), ("vocab", None), ("levels", None),
    ("conv_in", None), ("conv_out", None),
)

Rules = Sequence[tuple[str, Any]]


@gin.configurable
def initialize_distributed(enabled: bool | None = None):
  """Calls `jax.distributed.initialize()` once on multi-host runs.

  `enabled=None` detects a multi-host launch from the environment (a
  coordinator address, SLURM with several tasks, or a TPU pod's worker list).
  """
  if enabled is None:
    enabled = bool(
        os.environ.get("JAX_COORDINATOR_ADDRESS")
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
        or len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1)
  if enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def _resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if any(s == 0 or s < -1 for s in shape) or num_devices % known:
    raise ValueError(f"mesh shape {shape} does not divide {num_devices} devices")
  shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"mesh shape {shape} uses {math.prod(shape)} devices but {num_devices} exist")
  return shape


@gin.configurable
def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes ('data', 'fsdp', 'tensor'); -1 takes the remaining devices."""
  devices = list(devices if devices is not None else jax.devices())
  shape = _resolve_mesh_shape((data, fsdp, tensor), len(devices))
  device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  return Mesh(device_array, MESH_AXES)


@gin.configurable
def logical_axis_rules(rules: Rules = DATA_PARALLEL_RULES) -> tuple[tuple[str, Any], ...]:
  """The rules in force (set in gin/partitioning/*.gin)."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules):
  """Context in which logical activation constraints resolve onto `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def _fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
  """Replicates any dimension that the mesh axes it maps to do not divide."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is not None and dim % _axis_size(mesh, axes):
      logging.warning("dimension %d is not divisible by mesh axes %s: replicated",
                      dim, axes)
      axes = None
    fitted.append(axes)
  return PartitionSpec(*fitted)


def unbox(tree):
  """Strips logical-axis boxes, leaving plain arrays (or shape structs)."""
  return jax.tree_util.tree_map(
      lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
      tree, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_to_shardings(abstract_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a (boxed, abstract) tree from its logical annotations.

  Leaves without annotations (step counters, rng keys) are replicated.
  Returns a tree with the structure of `unbox(abstract_tree)`.
  """
  logical_specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  shapes = unbox(abstract_tree)
  return jax.tree_util.tree_map(
      lambda spec, leaf: NamedSharding(mesh, _fit_spec(spec, leaf.shape, mesh)),
      mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dimension split over the data and fsdp axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from each host's shard of it."""
  def to_global(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree_util.tree_map(to_global, local_batch)


def num_batch_shards(mesh: Mesh) -> int:
  return _axis_size(mesh, BATCH_AXES)


def place_batch(x, mesh: Mesh | None) -> jax.Array:
  """A host batch on `mesh`, split over its data axes for data-parallel
  inference; a batch that does not divide evenly is replicated instead.
  Without a mesh, on the default device."""
  if mesh is None:
    return jax.numpy.asarray(x)
  x = np.asarray(x)
  if x.shape[0] % num_batch_shards(mesh):
    logging.info("batch %d not divisible by %d batch shards: replicated", x.shape[0],
                 num_batch_shards(mesh))
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
  return jax.device_put(x, batch_sharding(mesh, x.ndim))
