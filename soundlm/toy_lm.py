"""A tiny causal Transformer LM on Markov-chain tokens.

It exercises the whole training stack (mesh, shardings, trainer, checkpoints,
gin) in seconds on a CPU, and its data has a known entropy rate, so a test can
tell whether training really learns.
"""
import flax.linen as nn
import gin
import jax.numpy as jnp
import numpy as np
import optax

from soundlm import trainer
from soundlm.io.iterators import SeededIterator
from soundlm.layers import initializers
from soundlm.layers.norm import layer_norm
from soundlm.layers.transformer import TransformerBlock


@gin.configurable
class MarkovChainData(SeededIterator):
  """Batches {'tokens': int32 [B / hosts, seq_len]} from a fixed random Markov
  chain; the chain is fixed by `chain_seed`, the samples by `seed`."""

  def __init__(self, batch_size: int = 16, seq_len: int = 32, vocab_size: int = 16,
               seed: int = 0, chain_seed: int = 0, concentration: float = 0.2):
    super().__init__(batch_size, seed)
    self.seq_len, self.vocab_size = seq_len, vocab_size
    rng = np.random.default_rng(chain_seed)
    self.transitions = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)

  def entropy_rate(self) -> float:
    """Nats per token of the chain under its stationary distribution."""
    values, vectors = np.linalg.eig(self.transitions.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary /= stationary.sum()
    logs = np.log(np.where(self.transitions > 0, self.transitions, 1.0))
    return float(-(stationary * (self.transitions * logs).sum(axis=1)).sum())

  def make_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = np.empty((self.local_batch_size, self.seq_len), np.int32)
    tokens[:, 0] = rng.integers(0, self.vocab_size, self.local_batch_size)
    cumulative = np.cumsum(self.transitions, axis=1)
    for t in range(1, self.seq_len):
      u = rng.random((self.local_batch_size, 1))
      tokens[:, t] = np.minimum((u > cumulative[tokens[:, t - 1]]).sum(axis=1),
                                self.vocab_size - 1)
    return {"tokens": tokens}


@gin.configurable
class ToyLanguageModel(nn.Module):
  vocab_size: int = 16
  embed_dim: int = 32
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, deterministic: bool = True):
    embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                     embedding_init=initializers.kernel(("vocab", "embed"),
                                                        nn.initializers.normal(1.0)))
    x = embed(tokens)
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.embed_dim // self.num_heads, self.mlp_dim,
                           causal=True, position="rope", dtype=self.dtype,
                           name=f"block_{i}")(x, deterministic=deterministic)
    x = layer_norm("final_norm", dtype=self.dtype)(x)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="logits",
                      kernel_init=initializers.kernel(("embed", "vocab")),
                      bias_init=initializers.zeros(("vocab",)))(x)
    return nn.with_logical_constraint(logits.astype(jnp.float32),
                                      ("batch", "length", "vocab"))


def next_token_loss(logits, tokens):
  """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1], tokens[:, 1:]).mean()


@gin.configurable
class ToyLanguageModelTask:
  """Next-token prediction with one parameter group, 'model'."""

  def __init__(self, model: ToyLanguageModel = gin.REQUIRED,
               optimizer: optax.GradientTransformation = gin.REQUIRED):
    self.model, self.optimizer = model, optimizer

  def init(self, rng, batch):
    variables = self.model.init(rng, batch["tokens"])
    return {"params": {"model": variables["params"]}}

  def _loss(self, variables, batch, rng, step):
    del rng, step
    logits = self.model.apply({"params": variables["params"]["model"]}, batch["tokens"])
    return next_token_loss(logits, batch["tokens"]), ({}, {})

  def phases(self):
    return [trainer.Phase("model", self._loss, self.optimizer)]

  def evaluate(self, variables, batch, rng):
    loss, _ = self._loss(variables, batch, rng, 0)
    return {"loss": loss}
