"""k-means fitted by two jax.distributed processes, each holding half of the
rows, agrees with one process holding all of them."""
import jax
import numpy as np

from soundlm import partitioning
from soundlm.semantic.kmeans import fit_kmeans
from tests import multihost_harness as harness
from tests.kmeans_process import blobs


def _sorted(centroids):
  return centroids[np.lexsort(centroids.T[::-1])]


def test_two_processes_fit_the_centroids_of_one(tmp_path):
  processes = harness.launch("tests.kmeans_process", [f"--out={tmp_path}"],
                             str(tmp_path / "logs"), num_processes=2)
  assert harness.wait_all(processes) == [0, 0], harness.logs_of(str(tmp_path / "logs"))
  first, second = (np.load(tmp_path / f"process{i}.npy") for i in range(2))
  np.testing.assert_array_equal(first, second)  # every process holds the same fit
  one, inertia = fit_kmeans(blobs(), 6, num_iters=8, batch_size=200,
                            mesh=partitioning.make_mesh(devices=jax.devices()[:4]))
  np.testing.assert_allclose(first[-2], one.mean, rtol=1e-6, atol=1e-6)  # normalisation
  np.testing.assert_allclose(first[-1], one.std, rtol=1e-6)
  np.testing.assert_allclose(_sorted(first[:-2]), _sorted(one.centroids), atol=1e-4)
  np.testing.assert_allclose(np.load(tmp_path / "inertia0.npy")[-1], inertia[-1], rtol=1e-4)
