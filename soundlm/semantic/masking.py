"""Span masking of frames, as in wav2vec 2.0 and w2v-BERT.

Every frame starts a masked span with probability `mask_prob`; a span covers
that frame and the `span_length - 1` frames after it (cut at the clip's end).
Spans overlap, so away from the clip's start a frame is masked with
probability `expected_mask_ratio(mask_prob, span_length)` = 1 - (1 - p)^M,
about 0.49 for the paper's p = 0.065, M = 10.
"""
import jax
import jax.numpy as jnp


def expected_mask_ratio(mask_prob: float, span_length: int) -> float:
  return 1.0 - (1.0 - mask_prob) ** span_length


def span_mask(rng: jax.Array, batch: int, length: int, mask_prob: float,
              span_length: int) -> jax.Array:
  """bool [batch, length]; True marks a masked frame."""
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f"mask_prob: expected a probability in [0, 1], got {mask_prob}")
  if span_length < 1:
    raise ValueError(f"span_length: expected >= 1, got {span_length}")
  starts = jax.random.bernoulli(rng, mask_prob, (batch, length)).astype(jnp.int32)
  started = jnp.cumsum(starts, axis=1)
  before_window = jnp.pad(started, ((0, 0), (span_length, 0)))[:, :length]
  return started - before_window > 0
