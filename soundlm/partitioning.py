"""Device meshes, logical axis rules and the shardings derived from them.

Parameters and activations are annotated with logical axis names (`embed`,
`mlp`, `heads`, ...). A list of rules, chosen in a gin file under
`gin/partitioning/`, maps those names onto the mesh axes
('data', 'fsdp', 'tensor'); everything else here follows from that mapping.
"""
import argparse
import contextlib
import dataclasses
import logging
import math
import os
from typing import Any, Mapping, Sequence

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
def distributed_settings(environ: Mapping[str, str], *, multihost: bool | None = None,
                         coordinator_address: str | None = None,
                         num_processes: int | None = None, process_id: int | None = None,
                         on_cloud_tpu_vm: bool = False) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for a
  single-process run.

  Explicit settings (arguments, else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID) are passed on, for clusters JAX cannot detect. Otherwise a
  Cloud TPU VM (where JAX reads the worker list from the metadata server, so a
  pod never starts as N independent jobs), SLURM with several tasks, a TPU
  worker list or `multihost=True` initialize with JAX's own detection (`{}`).
  `multihost=False` forces a single process.
  """
  if multihost is False:
    return None
  address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
  if address:
    count = num_processes if num_processes is not None else environ.get("JAX_NUM_PROCESSES")
    index = process_id if process_id is not None else environ.get("JAX_PROCESS_ID")
    settings = {"coordinator_address": address}
    if count is not None:
      settings["num_processes"] = int(count)
    if index is not None:
      settings["process_id"] = int(index)
    return settings
  if num_processes is not None or process_id is not None:
    raise ValueError("num_processes/process_id need a coordinator address "
                     "(--coordinator_address or JAX_COORDINATOR_ADDRESS)")
  detected = (multihost or on_cloud_tpu_vm
              or int(environ.get("SLURM_NTASKS", "1")) > 1
              or len(environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1)
  return {} if detected else None


def _on_cloud_tpu_vm() -> bool:
  """Whether JAX found a Cloud TPU VM (libtpu and TPU devices on this host)."""
  from jax._src import cloud_tpu_init  # Not exported; the flag JAX's own cluster detection uses.
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def initialize_distributed(multihost: bool | None = None, **explicit):
  """Calls `jax.distributed.initialize()` once, on every multi-host launch
  (see `distributed_settings`); `explicit` holds coordinator_address,
  num_processes and process_id when given as flags."""
  settings = distributed_settings(os.environ, multihost=multihost,
                                  on_cloud_tpu_vm=_on_cloud_tpu_vm(), **explicit)
  if settings is None or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**settings)
  logging.info("process %d of %d", jax.process_index(), jax.process_count())


def add_distributed_flags(parser):
  """The multi-host flags every job takes (train, tokenize, decode)."""
  group = parser.add_argument_group(
      "multi-host", "jax.distributed start-up: detected on Cloud TPU VMs, SLURM and "
      "TPU worker lists; explicit for other clusters (or JAX_COORDINATOR_ADDRESS, "
      "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
  group.add_argument("--multihost", action=argparse.BooleanOptionalAction, default=None,
                     help="force (or, with --no-multihost, skip) jax.distributed.initialize()")
  group.add_argument("--coordinator_address", help="host:port of process 0")
  group.add_argument("--num_processes", type=int)
  group.add_argument("--process_id", type=int)


def initialize_from_flags(args, parser):
  """`initialize_distributed` with the flags of `add_distributed_flags`; bad
  ones end the program with status 2 and the reason."""
  try:
    initialize_distributed(args.multihost, coordinator_address=args.coordinator_address,
                           num_processes=args.num_processes, process_id=args.process_id)
  except ValueError as error:
    parser.exit(2, f"error: {error}\n")


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


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """Where a model's arrays live: a mesh with logical axis rules, or one device.

  Every API and job places parameters and batches through one of these:
  parameters by their logical axis names, batches split over the data axes
  (padded to a whole number of batch shards, with a mask of the real rows).
  """
  mesh: Mesh | None = None
  rules: tuple = DATA_PARALLEL_RULES

  @classmethod
  def of(cls, mesh: Mesh | None = None, rules: Rules | None = None) -> "Partitioner":
    """A partitioner over `mesh`; rules default to the gin-configured ones."""
    rules = logical_axis_rules() if rules is None else rules
    return cls(mesh, tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                           for name, axes in rules))

  @property
  def num_batch_shards(self) -> int:
    return 1 if self.mesh is None else num_batch_shards(self.mesh)

  def activate(self):
    """Context in which logical constraints resolve (nothing to do on one device)."""
    return contextlib.nullcontext() if self.mesh is None else activate(self.mesh, self.rules)

  def shardings(self, abstract_tree):
    """Shardings for a boxed abstract tree (from `jax.eval_shape` of a module's
    init): by logical names over the mesh, or the default device."""
    if self.mesh is None:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      return jax.tree_util.tree_map(lambda _: device, unbox(abstract_tree))
    return logical_to_shardings(abstract_tree, self.mesh, self.rules)

  def place_params(self, variables, abstract_tree):
    """`variables` (unboxed) laid out like `abstract_tree`'s annotations say."""
    return jax.device_put(unbox(variables), self.shardings(abstract_tree))

  def replicate(self, tree):
    """A full copy of `tree` on every device of the mesh (for small models, such
    as the codec, that run data-parallel beside sharded ones)."""
    if self.mesh is None:
      return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

  def place_batch(self, batch):
    """(batch on the devices, valid): every array's leading dimension B is
    padded, by repeating the last row, to a multiple of the batch shards and
    split over the data axes; `valid` (numpy bool [B']) marks the real rows.
    Results of padded rows are to be dropped with `result[valid]`."""
    leaves = jax.tree_util.tree_leaves(batch)
    sizes = {np.shape(x)[0] for x in leaves}
    if len(sizes) != 1:
      raise ValueError(f"batch arrays disagree on their leading dimension: {sorted(sizes)}")
    size = sizes.pop()
    if size == 0:
      raise ValueError("the batch is empty")
    padded = -(-size // self.num_batch_shards) * self.num_batch_shards
    valid = np.arange(padded) < size

    def place(x):
      xp = jax.numpy if isinstance(x, jax.Array) else np
      x = xp.asarray(x)
      if padded != size:
        x = xp.concatenate([x, xp.repeat(x[-1:], padded - size, axis=0)])
      if self.mesh is None:
        return jax.numpy.asarray(x)
      return jax.device_put(x, batch_sharding(self.mesh, x.ndim))
    return jax.tree_util.tree_map(place, batch), valid
