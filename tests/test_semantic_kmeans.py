"""k-means: cluster recovery, monotone inertia, sharded statistics, save/load."""
import jax
import numpy as np
import pytest

from soundlm import partitioning
from soundlm.semantic.kmeans import KMeans, fit_kmeans


def _blobs(num_clusters=8, dim=16, rows=2000, spread=1.0, seed=0):
  rng = np.random.default_rng(seed)
  centers = 10 * rng.standard_normal((num_clusters, dim)) if spread > 1 else 20 * np.eye(
      num_clusters, dim)
  labels = rng.integers(0, num_clusters, rows)
  # Different scales per dimension: only normalisation makes them count alike.
  scales = np.geomspace(0.1, 100, dim)
  return (centers[labels] + spread * rng.standard_normal((rows, dim))) * scales, labels


def _same_partition(ids, labels):
  """True when ids equal labels up to a permutation of cluster names."""
  pairs = set(zip(labels.tolist(), ids.tolist()))
  return len(pairs) == len(set(labels.tolist())) == len(set(ids.tolist()))


@pytest.mark.parametrize("update,seed", [("lloyd", 0), ("lloyd", 1), ("minibatch", 2)])
def test_recovers_well_separated_clusters(update, seed):
  x, labels = _blobs(dim=8, seed=seed)
  kmeans, _ = fit_kmeans(x, 8, update=update, num_iters=15, batch_size=256, seed=seed)
  assert _same_partition(np.asarray(kmeans.assign(x)), labels)
  # Statistics are those of the data, kept for tokenization.
  np.testing.assert_allclose(kmeans.mean, x.mean(0), rtol=1e-4, atol=1e-4)


def test_lloyd_inertia_never_rises():
  x, _ = _blobs(num_clusters=12, dim=8, rows=3000, spread=6.0, seed=3)
  _, inertia = fit_kmeans(x, 12, init="random", num_iters=12, batch_size=700, seed=0)
  assert inertia[-1] < inertia[0]
  assert all(b <= a * (1 + 1e-5) for a, b in zip(inertia, inertia[1:])), inertia


def test_sharded_fit_matches_one_device():
  x, _ = _blobs(rows=1000, spread=4.0, seed=5)
  one, one_inertia = fit_kmeans(x, 8, num_iters=4, batch_size=300, seed=2,
                                mesh=partitioning.make_mesh(devices=jax.devices()[:1]))
  many, many_inertia = fit_kmeans(x, 8, num_iters=4, batch_size=300, seed=2,
                                  mesh=partitioning.make_mesh(data=8))
  np.testing.assert_allclose(many.centroids, one.centroids, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(many_inertia, one_inertia, rtol=1e-5)


def test_save_load_round_trip_and_bad_files(tmp_path):
  x, _ = _blobs(rows=200)
  kmeans, _ = fit_kmeans(x, 4, num_iters=2, layer=7)
  path = tmp_path / "kmeans.npz"
  kmeans.save(path)
  loaded = KMeans.load(path)
  assert loaded.layer == 7 and loaded.num_clusters == 4 and loaded.dim == 16
  np.testing.assert_array_equal(loaded.centroids, kmeans.centroids)
  np.testing.assert_array_equal(np.asarray(loaded.assign(x)), np.asarray(kmeans.assign(x)))
  with pytest.raises(ValueError, match="dimension 16"):
    loaded.assign(x[:, :8])
  np.savez(tmp_path / "other.npz", weights=np.zeros(3))
  with pytest.raises(ValueError, match="not a k-means file"):
    KMeans.load(tmp_path / "other.npz")
  with pytest.raises(FileNotFoundError):
    KMeans.load(tmp_path / "missing.npz")


def test_bad_arguments_raise():
  x, _ = _blobs(rows=50)
  with pytest.raises(ValueError, match="num_clusters"):
    fit_kmeans(x, 51)
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    fit_kmeans(x[None], 4)
  with pytest.raises(ValueError, match="update"):
    fit_kmeans(x, 4, update="online")
  with pytest.raises(ValueError, match="NaN"):
    fit_kmeans(np.full((10, 2), np.nan), 2)
