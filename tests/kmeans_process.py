"""One process of a multi-process k-means fit (tests/test_semantic_kmeans_multihost.py):
fits this process's share of `blobs()` on a mesh over every process's devices
and saves its centroids as <out>/process<i>.npy."""
import argparse
import os

import numpy as np


def blobs(num_rows: int = 1200, num_clusters: int = 6, dim: int = 4) -> np.ndarray:
  """Rows around num_clusters well-separated centres, in a fixed order."""
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 8, (num_clusters, dim))
  return (centres[rng.integers(0, num_clusters, num_rows)]
          + rng.normal(0, 0.3, (num_rows, dim))).astype(np.float32)


def main():
  from soundlm import partitioning
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  partitioning.add_distributed_flags(parser)
  args = parser.parse_args()
  partitioning.initialize_from_flags(args, parser)
  import jax

  from soundlm.semantic.kmeans import fit_kmeans
  rows = blobs()
  mine = np.array_split(rows, jax.process_count())[jax.process_index()]
  kmeans, inertia = fit_kmeans(mine, 6, num_iters=8, batch_size=200,
                               mesh=partitioning.make_mesh())
  np.save(os.path.join(args.out, f"process{jax.process_index()}.npy"),
          np.concatenate([kmeans.centroids, kmeans.mean[None], kmeans.std[None]]))
  np.save(os.path.join(args.out, f"inertia{jax.process_index()}.npy"), np.array(inertia))


if __name__ == "__main__":
  main()
