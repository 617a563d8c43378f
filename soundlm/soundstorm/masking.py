"""The paper's training-time masking of RVQ tokens.

Per example: a prompt boundary t ~ U{0..T-1} before which nothing is masked;
a level q ~ U{0..Q-1}; level q after t masked with probability p = cos(u),
u ~ U[0, pi/2); every level finer than q masked after t; coarser levels kept.
The loss covers exactly the masked tokens of level q.

The paper always decodes after a prompt, so its model rarely sees a level
masked from the first frame and is left uncalibrated there (on
KnownProcessCodes with 4 voices a model puts 0.91 of its level-0 mass on one
voice at a full mask). `unprompted_rate` sets the boundary to 0 for that
fraction of examples, for models that also generate without a prompt.
"""
import flax.struct
import jax
import jax.numpy as jnp

from soundlm.soundstorm import schedule


@flax.struct.dataclass
class TrainingMask:
  input_mask: jax.Array  # bool [B, T, Q]: the model sees the mask token here
  loss_mask: jax.Array   # bool [B, T, Q]: masked tokens of the chosen level
  prompt_len: jax.Array  # int32 [B]: frames before this are never masked
  level: jax.Array       # int32 [B]: the level q whose tokens are predicted
  ratio: jax.Array       # float32 [B]: masking probability p for level q


def sample_training_mask(rng, batch_size: int, num_frames: int, num_levels: int,
                         lengths=None, unprompted_rate: float = 0.0) -> TrainingMask:
  """Draws one mask per example as the paper describes.

  lengths: optional int [B] of real (unpadded) frames; the prompt boundary is
  then drawn from {0..length-1} so that it falls inside the real frames.
  unprompted_rate: the fraction of examples whose boundary is 0 (no prompt).
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if num_levels < 1:
    raise ValueError(f"num_levels must be >= 1, got {num_levels}")
  if not 0.0 <= unprompted_rate <= 1.0:
    raise ValueError(f"unprompted_rate must be in [0, 1], got {unprompted_rate}")
  k_prompt, k_level, k_ratio, k_tokens = jax.random.split(rng, 4)
  lengths = jnp.full((batch_size,), num_frames) if lengths is None else lengths
  prompt_len = jnp.floor(jax.random.uniform(k_prompt, (batch_size,)) * lengths)
  prompt_len = jnp.clip(prompt_len.astype(jnp.int32), 0, jnp.maximum(lengths - 1, 0))
  if unprompted_rate > 0:  # a key of its own: the paper's draws stay as they were
    unprompted = jax.random.uniform(jax.random.fold_in(rng, 1), (batch_size,)) < unprompted_rate
    prompt_len = jnp.where(unprompted, 0, prompt_len)
  level = jax.random.randint(k_level, (batch_size,), 0, num_levels)
  ratio = schedule.sample_mask_ratio(k_ratio, (batch_size,))
  drawn = jax.random.uniform(k_tokens, (batch_size, num_frames)) < ratio[:, None]

  after_prompt = jnp.arange(num_frames)[None, :] >= prompt_len[:, None]  # [B, T]
  levels = jnp.arange(num_levels)[None, :]
  at_level = levels == level[:, None]  # [B, Q]
  finer = levels > level[:, None]
  masked = (at_level[:, None, :] & drawn[:, :, None]) | finer[:, None, :]
  input_mask = after_prompt[:, :, None] & masked
  loss_mask = input_mask & at_level[:, None, :]
  return TrainingMask(input_mask=input_mask, loss_mask=loss_mask,
                      prompt_len=prompt_len.astype(jnp.int32),
                      level=level.astype(jnp.int32), ratio=ratio)
