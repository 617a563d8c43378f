"""w2v-BERT pre-training losses: contrastive (with sampled distractors),
codebook diversity, and masked prediction of quantizer ids."""
import jax
import jax.numpy as jnp
import optax


def sample_negatives(rng: jax.Array, mask: jax.Array, num_negatives: int) -> jax.Array:
  """For each frame, `num_negatives` indices of *other* masked frames of the same
  clip, uniformly: int32 [B, T, K]. Meaningful where the frame is masked and
  its clip has at least two masked frames."""
  batch, length = mask.shape
  # Masked positions first, in time order.
  order = jnp.argsort(~mask, axis=1, stable=True)
  count = mask.sum(axis=1)                                     # [B]
  rank = jnp.cumsum(mask, axis=1) - 1                          # rank among masked
  draw = jax.random.randint(rng, (batch, length, num_negatives), 0,
                            jnp.maximum(count - 1, 1)[:, None, None])
  draw = draw + (draw >= rank[..., None])                      # skip the frame itself
  return jax.vmap(lambda positions, picks: positions[picks])(order, draw)


def contrastive_loss(context, targets, mask, negatives, temperature: float):
  """InfoNCE over cosine similarities / temperature at masked frames.

  context, targets: [B, T, D]; negatives: [B, T, K] frame indices. A
  distractor equal to the positive target is ignored. Returns (loss, accuracy).
  """
  def cosine(a, b):
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-6)
    return jnp.sum(a * b, axis=-1)

  context, targets = context.astype(jnp.float32), targets.astype(jnp.float32)
  distractors = jax.vmap(lambda t, idx: t[idx])(targets, negatives)  # [B, T, K, D]
  positive = cosine(context, targets)[..., None]
  negative = cosine(context[:, :, None], distractors)
  same = jnp.all(distractors == targets[:, :, None], axis=-1)
  logits = jnp.concatenate([positive, jnp.where(same, -jnp.inf, negative)], -1) / temperature
  per_frame = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  weights = _valid_frames(mask)
  denominator = jnp.maximum(weights.sum(), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)
  return (per_frame * weights).sum() / denominator, (correct * weights).sum() / denominator


def _valid_frames(mask):
  """Masked frames of clips with at least two masked frames (one has no distractor)."""
  enough = mask.sum(axis=1, keepdims=True) >= 2
  return (mask & enough).astype(jnp.float32)


def diversity_loss(probs, codebook_size: int):
  """(V - perplexity of the batch-averaged code distribution) / V: 0 when every
  entry is used equally, near 1 when one entry takes everything."""
  average = probs.reshape(-1, probs.shape[-1]).mean(axis=0)
  perplexity = jnp.exp(-jnp.sum(average * jnp.log(average + 1e-7)))
  return (codebook_size - perplexity) / codebook_size, perplexity


def masked_prediction_loss(logits, target_ids, mask):
  """Cross-entropy of the quantizer ids at masked frames. Returns (loss, accuracy)."""
  per_frame = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jax.lax.stop_gradient(target_ids))
  weights = mask.astype(jnp.float32)
  denominator = jnp.maximum(weights.sum(), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == target_ids).astype(jnp.float32)
  return (per_frame * weights).sum() / denominator, (correct * weights).sum() / denominator
