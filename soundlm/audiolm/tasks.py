"""Training task for one AudioLM stage (the shared trainer's contract).

Batches hold `tokens` [B, L]: model sequences from `layouts` (the data
pipeline's seqio tasks or `synthetic.MarkovStageData`). The model predicts
tokens[:, 1:] from tokens[:, :-1]; the loss covers only the stage's targets
(the ids after START; conditioning, START and PAD are not scored), and each
target's softmax runs over the ids valid at its position only (its RVQ
level, or the semantic ids), the same set the sampler draws from.
"""
import gin
import jax
import jax.numpy as jnp

from soundlm import trainer
from soundlm.layers.ids import check_ids
from soundlm.audiolm.decoding import mask_invalid
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig, StageConfig


def target_cross_entropy(logits, targets, layout: Layout):
  """Per-token cross-entropy [B, T], target weights [B, T] and the logits
  restricted to each position's valid ids [B, T, V].

  Positions that are not targets of the stage get weight 0.
  """
  weights = layout.target_mask(targets)
  level = jnp.where(weights, (targets - layout.target_base) // layout.target_width, 0)
  low = layout.target_base + level * layout.target_width
  logits = mask_invalid(logits, low[..., None], (low + layout.target_width)[..., None])
  labels = jnp.where(weights, targets, low)
  label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  cross_entropy = jax.nn.logsumexp(logits, axis=-1) - label_logits
  return jnp.where(weights, cross_entropy, 0.0), weights.astype(jnp.float32), logits


@gin.configurable(module="soundlm.audiolm")
class AudioLMTask:
  """Next-token prediction for the stage of `layout`; one parameter group, 'model'."""

  def __init__(self, layout: Layout = gin.REQUIRED, model: ModelConfig = gin.REQUIRED,
               optimizer=gin.REQUIRED):
    self.layout, self.optimizer = layout, optimizer
    self.model_config = StageConfig(model, layout)  # what soundlm.train records
    self.model = DecoderLM(model, layout.padded_vocab_size)

  def _tokens(self, batch):
    tokens = batch["tokens"]
    if tokens.ndim != 2 or tokens.shape[1] < 2:
      raise ValueError(f"batch['tokens'] must be [batch, length>=2], got {tokens.shape}")
    return tokens.astype(jnp.int32)

  def check_batch(self, batch):
    """Refuses host batches with ids outside the stage's vocabulary."""
    check_ids("batch['tokens']", batch["tokens"], self.layout.vocab_size)

  def init(self, rng, batch):
    params = self.model.init(rng, self._tokens(batch)[:, :-1])["params"]
    return {"params": {"model": params}}

  def _metrics(self, variables, batch, rng, deterministic):
    tokens = self._tokens(batch)
    logits = self.model.apply({"params": variables["params"]["model"]}, tokens[:, :-1],
                              deterministic=deterministic, rngs={"dropout": rng})
    targets = tokens[:, 1:]
    cross_entropy, weights, logits = target_cross_entropy(logits, targets, self.layout)
    count = jnp.maximum(weights.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets) * weights
    return cross_entropy.sum() / count, {"accuracy": correct.sum() / count,
                                         "targets": weights.sum()}

  def loss(self, variables, batch, rng, step):
    del step
    loss, metrics = self._metrics(variables, batch, rng, deterministic=False)
    return loss, (metrics, {})

  def phases(self):
    return [trainer.Phase("model", self.loss, self.optimizer)]

  def evaluate(self, variables, batch, rng):
    loss, metrics = self._metrics(variables, batch, rng, deterministic=True)
    return {"loss": loss, **metrics}
