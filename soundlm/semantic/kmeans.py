"""k-means in JAX over normalised embeddings, as AudioLM's semantic tokens use.

Each embedding dimension is first normalised to zero mean and unit variance
(statistics of the fitting data, stored with the centroids). Initialisation is
k-means++ (on a sample) or random rows. Two update rules:

* 'lloyd': every iteration streams all rows through in mini-batches,
  accumulates per-cluster sums and counts, then moves each centroid to its
  cluster's mean (an emptied cluster keeps its centroid). The inertia never
  rises from one iteration to the next.
* 'minibatch' (Sculley, 2010): every iteration draws `batch_size` random rows
  and moves each centroid towards its rows with a per-centroid rate of
  1 / (rows it has seen); for data too large for full passes.

With a `mesh`, each mini-batch is split over the mesh's batch axes
('data', 'fsdp') and the cluster statistics are summed across them. In a
multi-process job (a mesh spanning the processes) every process passes its
own rows: the normalisation, the initial sample and every Lloyd pass are
taken over all processes' rows (collectives), so all processes hold the same
centroids, those of a single-process fit on the union of the rows up to the
order of floating-point sums.
"""
import dataclasses
import io
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from soundlm import partitioning
from soundlm.layers.rvq import kmeans_plus_plus

_FORMAT_VERSION = 2  # 2 adds `model`; files of version 1 load with model=None


@dataclasses.dataclass(frozen=True)
class KMeans:
  """Fitted centroids [K, D] in normalised space, plus the normalisation.

  `model` is the fingerprint of the embeddings it was fitted on
  (`SemanticEmbedder.fingerprint`: source, step, layer and digests of the
  parameters and the model config), checked when a tokenizer combines it
  with a model."""
  centroids: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  layer: int | None = None  # encoder hidden-state index the embeddings came from
  model: dict | None = None
  path: str | None = dataclasses.field(default=None, compare=False)  # file it was loaded from

  @property
  def num_clusters(self) -> int:
    return self.centroids.shape[0]

  @property
  def dim(self) -> int:
    return self.centroids.shape[1]

  def assign(self, embeddings: jax.Array) -> jax.Array:
    """int32 cluster ids [...] of embeddings [..., D] (jittable)."""
    if embeddings.shape[-1] != self.dim:
      raise ValueError(f"embeddings: expected dimension {self.dim} (the k-means "
                       f"centroids'), got {embeddings.shape[-1]}")
    x = (embeddings - self.mean) / self.std
    return _nearest(x.reshape(-1, self.dim), jnp.asarray(self.centroids))[0].reshape(
        embeddings.shape[:-1])

  def save(self, path) -> None:
    # Through a buffer: keeps the name as given (np.savez would add .npz) and
    # writes gs:// paths in one upload.
    buffer = io.BytesIO()
    np.savez(buffer, centroids=self.centroids, mean=self.mean, std=self.std,
             layer=-1 if self.layer is None else self.layer, version=_FORMAT_VERSION,
             model=json.dumps(self.model))
    epath.Path(path).write_bytes(buffer.getvalue())

  @classmethod
  def load(cls, path) -> "KMeans":
    path = os.fspath(path)
    if not epath.Path(path).is_file():
      raise FileNotFoundError(f"k-means file {path} does not exist")
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as data:
      missing = {"centroids", "mean", "std", "layer", "version"} - set(data.files)
      if missing:
        raise ValueError(f"{path}: not a k-means file (missing {sorted(missing)})")
      if int(data["version"]) > _FORMAT_VERSION:
        raise ValueError(f"{path}: k-means file format {int(data['version'])}, newer than "
                         f"this soundlm reads ({_FORMAT_VERSION})")
      centroids, mean, std = data["centroids"], data["mean"], data["std"]
      layer = int(data["layer"])
      model = json.loads(str(data["model"])) if "model" in data.files else None
    if centroids.ndim != 2 or mean.shape != (centroids.shape[1],) or std.shape != mean.shape:
      raise ValueError(f"{path}: inconsistent shapes: centroids {centroids.shape}, mean "
                       f"{mean.shape}, std {std.shape}")
    return cls(centroids.astype(np.float32), mean.astype(np.float32),
               std.astype(np.float32), None if layer < 0 else layer, model, path)


def _across_processes(x) -> np.ndarray:
  """[P, ...]: every process's `x`, in process order ([1, ...] on one process)."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def _host(array: jax.Array) -> np.ndarray:
  """A replicated array's value (each process holds a full copy)."""
  return np.asarray(array.addressable_data(0))


def _normalisation(x: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) per dimension of all processes' rows, in float64 two-pass."""
  mean = _across_processes(x.sum(axis=0, dtype=np.float64)).sum(axis=0) / total
  squares = _across_processes(((x - mean) ** 2).sum(axis=0)).sum(axis=0) / total
  return mean.astype(np.float32), np.maximum(np.sqrt(squares), 1e-6).astype(np.float32)


def _nearest(x, centroids):
  """(ids, squared distances) of the nearest centroid to each row of x."""
  d2 = (jnp.sum(x * x, axis=1, keepdims=True)
        - 2.0 * jnp.matmul(x, centroids.T, precision="highest")
        + jnp.sum(centroids * centroids, axis=1)[None])
  ids = jnp.argmin(d2, axis=1)
  return ids.astype(jnp.int32), jnp.maximum(jnp.take_along_axis(d2, ids[:, None], 1)[:, 0], 0)


@jax.jit
def _statistics(x, weights, centroids):
  """Per-cluster (sums [K, D], counts [K]) and the weighted inertia of one batch."""
  ids, d2 = _nearest(x, centroids)
  one_hot = jax.nn.one_hot(ids, centroids.shape[0], dtype=x.dtype) * weights[:, None]
  sums = jnp.matmul(one_hot.T, x, precision="highest")
  return sums, one_hot.sum(axis=0), jnp.sum(d2 * weights)


class _Batches:
  """Fixed-size (padded, weighted) batches, placed over the mesh's batch axes;
  each process fills its share of every batch from its own rows."""

  def __init__(self, x: np.ndarray, batch_size: int, mesh, rows_per_process: np.ndarray):
    shards = partitioning.num_batch_shards(mesh) if mesh is not None else 1
    self.x, self.mesh = x, mesh
    self.size = -(-batch_size // shards) * shards // jax.process_count()  # this process's rows
    # Every process runs as many batches as the one with the most rows.
    self.count = -(-int(rows_per_process.max()) // self.size)

  def place(self, rows: np.ndarray):
    pad = self.size - rows.shape[0]
    weights = np.concatenate([np.ones(rows.shape[0]), np.zeros(pad)]).astype(np.float32)
    rows = np.concatenate([rows, np.zeros((pad, rows.shape[1]), rows.dtype)])
    if self.mesh is None:
      return jnp.asarray(rows), jnp.asarray(weights)
    placed = partitioning.global_batch({"rows": rows, "weights": weights}, self.mesh)
    return placed["rows"], placed["weights"]

  def all(self):
    for index in range(self.count):
      yield self.place(self.x[index * self.size:(index + 1) * self.size])


def fit_kmeans(embeddings, num_clusters: int = 1024, *, init: str = "kmeans++",
               update: str = "lloyd", num_iters: int = 50, batch_size: int = 8192,
               init_sample_size: int = 50_000, seed: int = 0, mesh=None,
               layer: int | None = None, model: dict | None = None,
               on_iteration: Callable[[int, float], None] | None = None
               ) -> tuple[KMeans, list[float]]:
  """Fits k-means to embeddings [N, D] (this process's rows); returns
  (KMeans, inertia per iteration). `layer` and `model` (the embedder's
  fingerprint) are recorded with it.

  The inertia of iteration i is the summed squared distance of the rows it
  used (all rows for 'lloyd', its random batch for 'minibatch') to the
  centroids it started from. `on_iteration(i, inertia)` is called after each
  iteration (progress).
  """
  x = np.asarray(embeddings, np.float32)
  if x.ndim != 2:
    raise ValueError(f"embeddings: expected [N, D], got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError("embeddings: contain NaN or infinite values")
  if jax.process_count() > 1 and mesh is None:
    raise ValueError(f"a k-means fit over {jax.process_count()} processes needs a mesh "
                     "that spans them (mesh=partitioning.make_mesh())")
  rows_per_process = _across_processes(np.int64(x.shape[0]))
  total = int(rows_per_process.sum())
  if not 1 <= num_clusters <= total:
    raise ValueError(f"num_clusters: expected 1..{total} (the number of rows), "
                     f"got {num_clusters}")
  if init not in ("kmeans++", "random"):
    raise ValueError(f"init: expected 'kmeans++' or 'random', got {init!r}")
  if update not in ("lloyd", "minibatch"):
    raise ValueError(f"update: expected 'lloyd' or 'minibatch', got {update!r}")
  if num_iters < 1 or batch_size < 1:
    raise ValueError(f"num_iters and batch_size must be >= 1, got {num_iters}, {batch_size}")
  mean, std = _normalisation(x, total)
  x = (x - mean) / std
  rng = np.random.default_rng((seed, jax.process_index()))  # this process's draws
  # The initial sample: an equal share of random rows from every process.
  share = min(-(-max(init_sample_size, num_clusters) // len(rows_per_process)),
              int(rows_per_process.min()))
  sample = _across_processes(x[rng.permutation(x.shape[0])[:share]]).reshape(-1, x.shape[1])
  if sample.shape[0] < num_clusters:
    raise ValueError(f"num_clusters {num_clusters}: the initial sample holds {sample.shape[0]} "
                     f"rows ({share} from each process, the fewest any process has)")
  if init == "kmeans++":
    centroids = np.asarray(kmeans_plus_plus(jnp.asarray(sample), num_clusters,
                                            jax.random.key(seed)), np.float64)
  else:
    chosen = np.random.default_rng(seed).choice(sample.shape[0], num_clusters, replace=False)
    centroids = sample[chosen].astype(np.float64)
  batches = _Batches(x, batch_size, mesh, rows_per_process)
  # Centroids and cluster statistics live on the host (float64), the same on
  # every process; each batch's statistics are reduced on the devices.
  on_devices = partitioning.Partitioner(mesh).replicate

  def statistics(rows, weights, placed_centroids):
    sums, counts, inertia = _statistics(rows, weights, placed_centroids)
    return _host(sums).astype(np.float64), _host(counts).astype(np.float64), float(_host(inertia))

  seen = np.zeros(num_clusters)
  history = []
  for _ in range(num_iters):
    placed = on_devices(centroids.astype(np.float32))  # once per iteration, not per batch
    if update == "lloyd":
      sums, counts, inertia = np.zeros_like(centroids), np.zeros(num_clusters), 0.0
      for rows, weights in batches.all():
        batch_sums, batch_counts, batch_inertia = statistics(rows, weights, placed)
        sums, counts, inertia = sums + batch_sums, counts + batch_counts, inertia + batch_inertia
      centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None],
                           centroids)
    else:
      rows, weights = batches.place(x[rng.choice(x.shape[0], min(batches.size, x.shape[0]),
                                                 replace=False)])
      batch_sums, batch_counts, inertia = statistics(rows, weights, placed)
      seen = seen + batch_counts
      step = np.where(seen > 0, 1.0 / np.maximum(seen, 1), 0.0)[:, None]
      centroids = centroids + step * (batch_sums - batch_counts[:, None] * centroids)
    history.append(inertia)
    if on_iteration is not None:
      on_iteration(len(history), inertia)
  fitted = KMeans(centroids.astype(np.float32), mean, std, layer, model)
  return fitted, history
