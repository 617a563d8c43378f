"""Residual vector quantizer with EMA codebooks (SoundStream, arXiv 2107.03312).

Level q quantizes what levels 1..q-1 left over, so the first levels carry the
coarse content and any prefix of levels is a valid, lower-bitrate code.

Codebooks are not parameters: they live in the 'quantizer' collection and are
moved by exponential moving averages of the frames assigned to each code.
In training (`train=True`, 'quantizer' mutable, a 'quantizer' rng):
  * the first call initialises every codebook by k-means on its level's
    residuals of that batch;
  * dead codes are replaced by random frames of the current batch: a code is
    dead when its EMA usage falls below `dead_code_threshold` times the mean
    usage, or when no frame has been assigned to it for the last
    `dead_code_patience` x `codebook_size` frames (the span in which evenly
    spread usage would have used it `dead_code_patience` times: a couple of
    batches when a batch has about as many frames as the codebook has codes).
    The EMA rule alone reacts slowly (with decay 0.99 a code's usage takes
    ~350 batches to fall to 3% of what it was); the patience rule replaces
    the codes that a shift of the input left unused within a few batches;
  * quantizer dropout keeps only the first n_q levels of each example, n_q
    drawn uniformly from 1..Q, so one model serves every bitrate.
All statistics are jnp reductions over the whole (global) batch, so under
`jax.jit` with a batch sharded over devices they are reduced across devices.
"""
from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

COLLECTION = "quantizer"


@flax.struct.dataclass
class QuantizerOutput:
  quantized: jax.Array        # [B, T, D], straight-through to the input
  codes: jax.Array            # [B, T, Q] int32
  commitment_loss: jax.Array  # scalar, summed over levels
  perplexity: jax.Array       # [Q], codebook usage of this batch (K = all codes used evenly)
  dead_codes: jax.Array       # [Q], codes replaced in this call


def squared_distances(x, codebook):
  """[N, D] x [K, D] -> [N, K] squared Euclidean distances."""
  return (jnp.sum(x * x, -1, keepdims=True) - 2.0 * x @ codebook.T
          + jnp.sum(codebook * codebook, -1)[None])


def nearest(x, codebook):
  return jnp.argmin(squared_distances(x, codebook), axis=-1).astype(jnp.int32)


def kmeans_plus_plus(x, num_clusters: int, rng):
  """k-means++ seeding of [N, D] rows -> [num_clusters, D]: each new centre is a
  row drawn with probability ~ its squared distance to the nearest centre so
  far. The codebooks here and the semantic tokenizer's k-means both seed with it."""
  first = jax.random.randint(rng, (), 0, x.shape[0])

  def pick(i, state):
    centroids, nearest_sq, key = state
    key, sub = jax.random.split(key)
    row = x[jax.random.categorical(sub, jnp.log(jnp.maximum(nearest_sq, 1e-30)))]
    nearest_sq = jnp.minimum(nearest_sq, jnp.sum((x - row) ** 2, -1))
    return centroids.at[i].set(row), nearest_sq, key

  centroids = jnp.zeros((num_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
  nearest_sq = jnp.sum((x - x[first]) ** 2, -1)
  return jax.lax.fori_loop(1, num_clusters, pick,
                           (centroids, nearest_sq, jax.random.fold_in(rng, 1)))[0]


def kmeans(x, num_clusters: int, iterations: int, rng):
  """Lloyd's k-means on [N, D] from k-means++ seeds -> (centroids, counts).

  Empty clusters keep their previous centroid (and a count of zero, so the
  dead-code rule replaces them on the first update).
  """
  def step(_, state):
    centroids, _ = state
    onehot = jax.nn.one_hot(nearest(x, centroids), num_clusters, dtype=x.dtype)
    counts = onehot.sum(0)
    sums = onehot.T @ x
    centroids = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None],
                          centroids)
    return centroids, counts

  return jax.lax.fori_loop(0, iterations, step, (kmeans_plus_plus(x, num_clusters, rng),
                                                 jnp.zeros((num_clusters,), x.dtype)))


def quantizer_dropout_mask(rng, batch: int, num_levels: int, rate: float):
  """[B, Q] float mask of the levels each example uses: levels < n_q.

  A fraction `rate` of examples draws n_q uniformly from 1..Q; the others use all Q.
  """
  draw_rng, apply_rng = jax.random.split(rng)
  n_q = jax.random.randint(draw_rng, (batch,), 1, num_levels + 1)
  n_q = jnp.where(jax.random.uniform(apply_rng, (batch,)) < rate, n_q, num_levels)
  return (jnp.arange(num_levels)[None] < n_q[:, None]).astype(jnp.float32)


def perplexity(counts):
  probs = counts / jnp.maximum(counts.sum(), 1e-9)
  return jnp.exp(-jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0)))


class ResidualVectorQuantizer(nn.Module):
  """[B, T, D] -> Q levels of K codes; `encode`/`decode` map to and from codes."""
  num_levels: int
  codebook_size: int
  dim: int
  decay: float = 0.99
  epsilon: float = 1e-5
  kmeans_iterations: int = 10
  dead_code_threshold: float = 0.03
  dead_code_patience: float = 4.0  # 0 disables the rule of frames gone unused
  dropout_rate: float = 1.0  # fraction of examples that get quantizer dropout
  commitment_weight: float = 1.0

  def setup(self):
    shape = (self.num_levels, self.codebook_size)
    self.codebook = self.variable(
        COLLECTION, "codebook",
        lambda: jax.random.normal(self.make_rng("params"), shape + (self.dim,)))
    self.cluster_size = self.variable(COLLECTION, "cluster_size", jnp.ones, shape)
    self.embed_sum = self.variable(
        COLLECTION, "embed_sum", lambda: self.codebook.value * 1.0)
    # Frames of the training batches since the code was last assigned one.
    self.frames_unused = self.variable(COLLECTION, "frames_unused", jnp.zeros, shape)
    self.initialized = self.variable(COLLECTION, "initialized", lambda: jnp.array(False))

  def _check_levels(self, num_levels: Optional[int]) -> int:
    num_levels = self.num_levels if num_levels is None else num_levels
    if not 1 <= num_levels <= self.num_levels:
      raise ValueError(f"num_levels must be in [1, {self.num_levels}], got {num_levels}")
    return num_levels

  def _check_input(self, x):
    if x.ndim != 3 or x.shape[-1] != self.dim:
      raise ValueError(f"x must be [batch, length, {self.dim}], got shape {x.shape}")

  def encode(self, x, num_levels: Optional[int] = None):
    """[B, T, D] -> int32 codes [B, T, num_levels]."""
    self._check_input(x)
    num_levels = self._check_levels(num_levels)
    residual = x.reshape(-1, self.dim).astype(jnp.float32)
    codes = []
    for codebook in self.codebook.value[:num_levels]:
      level_codes = nearest(residual, codebook)
      residual = residual - codebook[level_codes]
      codes.append(level_codes)
    return jnp.stack(codes, -1).reshape(x.shape[:2] + (num_levels,))

  def decode(self, codes):
    """int32 codes [B, T, Q'] (Q' <= Q) -> [B, T, D], the sum of the levels' code vectors."""
    if codes.ndim != 3 or not 1 <= codes.shape[-1] <= self.num_levels:
      raise ValueError(
          f"codes must be [batch, length, levels] with 1..{self.num_levels} levels, "
          f"got shape {codes.shape}")
    levels = jnp.arange(codes.shape[-1])
    return self.codebook.value[levels, codes].sum(-2)

  def __call__(self, x, *, train: bool = False, num_levels: Optional[int] = None):
    """Quantizes [B, T, D]. Outside training uses the first `num_levels` levels."""
    self._check_input(x)
    if not train:
      codes = self.encode(x, num_levels)
      quantized = self.decode(codes)
      zeros = jnp.zeros((self.num_levels,))
      return QuantizerOutput(
          quantized=x + jax.lax.stop_gradient(quantized - x), codes=codes,
          commitment_loss=jnp.mean((x - jax.lax.stop_gradient(quantized)) ** 2),
          perplexity=zeros, dead_codes=zeros)
    if num_levels is not None:
      raise ValueError("num_levels is drawn per example in training; pass None")
    return self._train(x)

  def _train(self, x):
    batch, length, _ = x.shape
    flat = x.reshape(-1, self.dim).astype(jnp.float32)
    rng = self.make_rng(COLLECTION)
    mask_rng, level_rng = jax.random.split(rng)
    active = quantizer_dropout_mask(mask_rng, batch, self.num_levels, self.dropout_rate)
    active = jnp.repeat(active, length, axis=0)  # [N, Q]
    initialized = self.initialized.value
    level_rngs = jax.random.split(level_rng, self.num_levels)

    def level(residual, inputs):
      codebook, cluster_size, embed_sum, frames_unused, mask, rng = inputs
      init_rng, dead_rng = jax.random.split(rng)
      codebook, cluster_size, embed_sum, frames_unused = jax.lax.cond(
          initialized, lambda: (codebook, cluster_size, embed_sum, frames_unused),
          lambda: self._kmeans_state(residual, init_rng))
      codes = nearest(residual, codebook)
      quantized = codebook[codes]
      onehot = jax.nn.one_hot(codes, self.codebook_size) * mask[:, None]
      counts = onehot.sum(0)
      frames_unused = jnp.where(counts > 0, 0.0, frames_unused + mask.sum())
      state = self._ema(cluster_size, embed_sum, counts, onehot.T @ residual)
      state, dead = self._replace_dead(state + (frames_unused,), residual, mask, dead_rng)
      error = jnp.mean((residual - quantized) ** 2, -1)
      commitment = jnp.sum(error * mask) / jnp.maximum(mask.sum(), 1.0)
      outputs = (codes, quantized * mask[:, None], commitment, perplexity(counts),
                 dead.sum(), state)
      return residual - quantized, outputs

    _, (codes, quantized, commitment, perplexities, dead, state) = jax.lax.scan(
        level, flat, (self.codebook.value, self.cluster_size.value, self.embed_sum.value,
                      self.frames_unused.value, active.T, level_rngs))
    if self.is_mutable_collection(COLLECTION):
      (self.codebook.value, self.cluster_size.value, self.embed_sum.value,
       self.frames_unused.value) = state
      self.initialized.value = jnp.array(True)
    quantized = quantized.sum(0).reshape(x.shape).astype(x.dtype)
    return QuantizerOutput(
        quantized=x + jax.lax.stop_gradient(quantized - x),
        codes=codes.T.reshape(batch, length, self.num_levels),
        commitment_loss=self.commitment_weight * commitment.sum(),
        perplexity=perplexities, dead_codes=dead.astype(jnp.float32))

  def _kmeans_state(self, residual, rng):
    centroids, counts = kmeans(residual, self.codebook_size, self.kmeans_iterations, rng)
    return centroids, counts, centroids * counts[:, None], jnp.zeros_like(counts)

  def _ema(self, cluster_size, embed_sum, counts, sums):
    """EMA of per-code counts and sums; codebook = Laplace-smoothed mean."""
    cluster_size = self.decay * cluster_size + (1 - self.decay) * counts
    embed_sum = self.decay * embed_sum + (1 - self.decay) * sums
    total = cluster_size.sum()
    smoothed = ((cluster_size + self.epsilon)
                / (total + self.codebook_size * self.epsilon) * total)
    return embed_sum / smoothed[:, None], cluster_size, embed_sum

  def _replace_dead(self, state, residual, mask, rng):
    """Codes used less than `dead_code_threshold` x the mean usage, or not at all
    in the last `dead_code_patience` x `codebook_size` frames, get batch frames."""
    codebook, cluster_size, embed_sum, frames_unused = state
    mean_usage = cluster_size.sum() / self.codebook_size
    dead = cluster_size < self.dead_code_threshold * mean_usage
    if self.dead_code_patience > 0:
      dead |= frames_unused >= self.dead_code_patience * self.codebook_size
    weights = jnp.where(mask.sum() > 0, mask, jnp.ones_like(mask))
    picks = jax.random.categorical(
        rng, jnp.log(weights), shape=(self.codebook_size,))
    samples = residual[picks]
    codebook = jnp.where(dead[:, None], samples, codebook)
    cluster_size = jnp.where(dead, mean_usage, cluster_size)
    embed_sum = jnp.where(dead[:, None], samples * mean_usage, embed_sum)
    frames_unused = jnp.where(dead, 0.0, frames_unused)
    return (codebook, cluster_size, embed_sum, frames_unused), dead
