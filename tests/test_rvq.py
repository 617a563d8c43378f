"""Residual VQ: error vs levels, EMA update, k-means init, dead codes, dropout, sharding."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from soundlm import partitioning
from soundlm.layers.rvq import COLLECTION, ResidualVectorQuantizer, quantizer_dropout_mask


@functools.partial(jax.jit, static_argnums=0)
def _train_call(quantizer, variables, x, seed=0):
  return quantizer.apply(variables, x, train=True, rngs={COLLECTION: jax.random.key(seed)},
                         mutable=[COLLECTION])


@pytest.fixture(scope="module")
def fitted():
  """A 6-level quantizer after a few training calls on Gaussian frames."""
  quantizer = ResidualVectorQuantizer(num_levels=6, codebook_size=16, dim=4,
                                      dropout_rate=0.0)
  x = jax.random.normal(jax.random.key(0), (8, 32, 4))
  variables = quantizer.init(jax.random.key(1), x)
  for seed in range(3):
    variables = _train_call(quantizer, variables, x, seed)[1]
  return quantizer, variables, x


def test_error_does_not_increase_with_levels(fitted):
  quantizer, variables, x = fitted

  @jax.jit
  def errors_per_level(variables):
    errors = []
    for levels in range(1, quantizer.num_levels + 1):
      codes = quantizer.apply(variables, x, levels, method="encode")
      assert codes.shape == (8, 32, levels) and codes.dtype == jnp.int32
      recon = quantizer.apply(variables, codes, method="decode")
      errors.append(jnp.mean(jnp.sum((x - recon) ** 2, -1)))
    return jnp.stack(errors)

  errors = np.asarray(errors_per_level(variables))
  assert np.all(np.diff(errors) <= 1e-6), errors
  assert errors[-1] < 0.25 * errors[0]


def test_kmeans_initialises_codebooks_on_first_batch():
  """Frames from 4 tight clusters: after the first call the codebook holds their centres."""
  centres = np.array([[5., 0.], [-5., 0.], [0., 5.], [0., -5.]], np.float32)
  rng = np.random.default_rng(0)
  x = centres[rng.integers(0, 4, 256)] + 0.01 * rng.normal(size=(256, 2)).astype(np.float32)
  x = jnp.asarray(x.reshape(4, 64, 2))
  quantizer = ResidualVectorQuantizer(num_levels=1, codebook_size=4, dim=2, dropout_rate=0.0,
                                      kmeans_iterations=10, dead_code_threshold=0.0)
  variables = quantizer.init(jax.random.key(1), x)
  assert not bool(variables[COLLECTION]["initialized"])
  _, updated = _train_call(quantizer, variables, x)
  state = updated[COLLECTION]
  assert bool(state["initialized"])
  codebook = np.asarray(state["codebook"][0])
  distances = np.linalg.norm(codebook[:, None] - centres[None], axis=-1)
  assert np.all(distances.min(axis=0) < 0.1), codebook  # every centre found
  np.testing.assert_allclose(state["cluster_size"][0].sum(), 256.0, rtol=1e-5)


def _constructed_state(codebook, cluster_size, embed_sum):
  return {COLLECTION: {
      "codebook": jnp.asarray(codebook, jnp.float32)[None],
      "cluster_size": jnp.asarray(cluster_size, jnp.float32)[None],
      "embed_sum": jnp.asarray(embed_sum, jnp.float32)[None],
      "frames_unused": jnp.zeros((1, len(cluster_size)), jnp.float32),
      "initialized": jnp.array(True)}}


def test_ema_update_moves_codes_to_assigned_means():
  decay, eps = 0.5, 1e-5
  quantizer = ResidualVectorQuantizer(num_levels=1, codebook_size=2, dim=1, decay=decay,
                                      epsilon=eps, dropout_rate=0.0, dead_code_threshold=0.0)
  variables = _constructed_state([[0.0], [10.0]], [2.0, 2.0], [[0.0], [20.0]])
  x = jnp.array([[[1.0], [3.0], [9.0]]])  # two frames to code 0 (mean 2), one to code 1
  out, updated = _train_call(quantizer, variables, x)
  np.testing.assert_array_equal(out.codes[0, :, 0], [0, 0, 1])
  state = jax.tree.map(np.asarray, updated[COLLECTION])
  cluster_size = decay * np.array([2.0, 2.0]) + (1 - decay) * np.array([2.0, 1.0])
  embed_sum = decay * np.array([0.0, 20.0]) + (1 - decay) * np.array([4.0, 9.0])
  total = cluster_size.sum()
  smoothed = (cluster_size + eps) / (total + 2 * eps) * total
  np.testing.assert_allclose(state["cluster_size"][0], cluster_size, rtol=1e-6)
  np.testing.assert_allclose(state["embed_sum"][0, :, 0], embed_sum, rtol=1e-6)
  np.testing.assert_allclose(state["codebook"][0, :, 0], embed_sum / smoothed, rtol=1e-5)
  # Straight-through: the output carries the codewords' values.
  np.testing.assert_allclose(out.quantized[0, :, 0], [0.0, 0.0, 10.0], atol=1e-6)
  np.testing.assert_allclose(out.commitment_loss, (1 + 9 + 1) / 3, rtol=1e-5)


def test_dead_code_replaced_by_batch_frame():
  quantizer = ResidualVectorQuantizer(num_levels=1, codebook_size=3, dim=2, decay=0.9,
                                      dropout_rate=0.0, dead_code_threshold=0.1,
                                      dead_code_patience=0.0)  # the EMA rule alone
  # Code 2 is far away and its usage is already ~0: it must be replaced.
  variables = _constructed_state([[0., 0.], [1., 1.], [100., 100.]], [10., 10., 0.01],
                                 [[0., 0.], [10., 10.], [1., 1.]])
  x = jax.random.normal(jax.random.key(3), (2, 8, 2)) * 0.3
  out, updated = _train_call(quantizer, variables, x)
  np.testing.assert_array_equal(out.dead_codes, [1.0])
  codebook = np.asarray(updated[COLLECTION]["codebook"][0])
  frames = np.asarray(x).reshape(-1, 2)
  assert np.min(np.linalg.norm(frames - codebook[2], axis=-1)) < 1e-6  # a frame of the batch
  assert float(updated[COLLECTION]["cluster_size"][0, 2]) > 1.0  # given a fair start
  assert not np.allclose(codebook[:2], [[100., 100.]] * 2)


def _level0_perplexity_after_shift(patience: float):
  """Level-0 perplexity of a 2-level quantizer (16 codes) trained 10 batches on
  16 clusters around the origin, then 12 batches on the same clusters moved
  8 units away (a shift of the input distribution): [22] per batch."""
  quantizer = ResidualVectorQuantizer(num_levels=2, codebook_size=16, dim=4, dropout_rate=0.0,
                                      dead_code_patience=patience)
  centres = jax.random.normal(jax.random.key(0), (16, 4)) * 2.0
  shift = jnp.array([8.0, 0.0, 0.0, 0.0])

  def batch(step):
    key_c, key_n = jax.random.split(jax.random.key(100 + step))
    frames = centres[jax.random.randint(key_c, (8 * 32,), 0, 16)]
    frames = frames + 0.1 * jax.random.normal(key_n, frames.shape)
    return (frames + (shift if step >= 10 else 0.0)).reshape(8, 32, 4)

  variables = quantizer.init(jax.random.key(1), batch(0))
  perplexities = []
  for step in range(22):
    out, variables = _train_call(quantizer, variables, batch(step), step)
    perplexities.append(float(out.perplexity[0]))
  return np.array(perplexities)


def test_dead_codes_replaced_within_a_few_batches_of_a_shift():
  """After the input moves, the codes left unused are replaced from the new
  frames within a few batches and level 0's perplexity comes back; the EMA
  threshold alone (patience 0) leaves level 0 collapsed."""
  fast = _level0_perplexity_after_shift(patience=4.0)
  slow = _level0_perplexity_after_shift(patience=0.0)
  before = fast[5:10].mean()
  assert before > 10.0, fast  # 16 clusters, 16 codes: most in use before the shift
  assert fast[10] < 0.5 * before, fast  # the shift collapses level 0...
  assert fast[13:].min() > 0.7 * before, fast  # ...and within 3 batches it is back
  assert slow[10:].max() < 0.5 * before, slow  # without the patience rule it is not


def test_quantizer_dropout_draws_levels_in_range():
  mask = np.asarray(quantizer_dropout_mask(jax.random.key(0), 4000, 5, 1.0))
  levels = mask.sum(-1).astype(int)
  assert levels.min() == 1 and levels.max() == 5
  counts = np.bincount(levels, minlength=6)[1:]
  assert np.all(np.abs(counts / 4000 - 0.2) < 0.03), counts  # uniform over 1..Q
  np.testing.assert_array_equal(mask, np.arange(5)[None] < levels[:, None])  # prefixes
  half = np.asarray(quantizer_dropout_mask(jax.random.key(1), 4000, 5, 0.5)).sum(-1)
  assert 0.55 < np.mean(half == 5) < 0.65  # half keep all, a fifth of the rest too
  assert np.all(np.asarray(quantizer_dropout_mask(jax.random.key(2), 50, 5, 0.0)) == 1)


def test_training_output_uses_a_prefix_of_levels(fitted):
  """With quantizer dropout each example's output is the sum of its first n_q codewords."""
  quantizer, variables, x = fitted
  out, _ = _train_call(quantizer.clone(dropout_rate=1.0), variables, x, seed=7)
  codebook = np.asarray(variables[COLLECTION]["codebook"])
  codes = np.asarray(out.codes)
  prefixes = np.cumsum(codebook[np.arange(6), codes], axis=-2)  # [B, T, n_q, D]
  used = []
  for b in range(x.shape[0]):
    matches = [n + 1 for n in range(6)
               if np.allclose(out.quantized[b], prefixes[b, :, n], atol=1e-5)]
    assert len(matches) == 1, matches
    used.append(matches[0])
  assert len(set(used)) > 1, used


def test_sharded_statistics_match_single_device():
  """EMA statistics over a batch split across 8 devices equal the 1-device ones."""
  quantizer = ResidualVectorQuantizer(num_levels=3, codebook_size=8, dim=4)
  x = jax.random.normal(jax.random.key(0), (8, 16, 4))
  variables = quantizer.init(jax.random.key(1), x)

  def first_step(v, x):  # k-means initialisation, EMA update and dead-code replacement
    out, v = quantizer.apply(v, x, train=True, rngs={COLLECTION: jax.random.key(0)},
                             mutable=[COLLECTION])
    return out.codes, out.perplexity, v

  single = jax.jit(first_step)(variables, x)
  mesh = partitioning.make_mesh(data=8)
  x_sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = jax.jit(first_step, in_shardings=(replicated, x_sharded.sharding))(
      variables, x_sharded)
  assert len(sharded[0].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(sharded[0]), np.asarray(single[0]))
  for a, b in zip(jax.tree.leaves(sharded[1:]), jax.tree.leaves(single[1:])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_bad_input(fitted):
  quantizer, variables, x = fitted
  with pytest.raises(ValueError, match="num_levels must be in"):
    quantizer.apply(variables, x, 7, method="encode")
  with pytest.raises(ValueError, match=r"must be \[batch, length, 4\]"):
    quantizer.apply(variables, x[..., :3], method="encode")
  with pytest.raises(ValueError, match="1..6 levels"):
    quantizer.apply(variables, jnp.zeros((1, 2, 7), jnp.int32), method="decode")
  with pytest.raises(ValueError, match="drawn per example"):
    quantizer.apply(variables, x, train=True, num_levels=2,
                    rngs={COLLECTION: jax.random.key(0)})
