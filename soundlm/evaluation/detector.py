"""A synthetic-speech detector over codec tokens (AudioLM, Sec. 5.3).

    result = detector.evaluate(real_codes, generated_codes, codebook_size=1024)
    result["accuracy"]   # on held-out clips; 0.5 means real and generated look alike

A small classifier is trained on windows of acoustic tokens of real clips
against those of generated clips, and scored on clips it never saw: each
frame's codes are embedded per level and summed, with whether each level
repeats the previous frame's code, two 1-D convolutions see a few frames of
context, the frames are mean-pooled and an MLP gives one logit.
The split is by clip (or by a group of clips, e.g. a prompt's real and
generated continuations), so the score says whether generated audio can be
told apart, not whether clips can be remembered.
"""
import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """Training settings. Windows are `window_frames` codec frames long."""
  window_frames: int = 50
  embed_dim: int = 32
  hidden_dim: int = 64
  kernel_size: int = 3
  steps: int = 300
  batch_size: int = 32
  learning_rate: float = 3e-3
  test_fraction: float = 0.3
  seed: int = 0


class TokenClassifier(nn.Module):
  """int32 codes [B, T, Q] -> logit [B] (positive: generated)."""
  num_levels: int
  codebook_size: int
  config: DetectorConfig

  @nn.compact
  def __call__(self, codes):
    c = self.config
    offsets = jnp.arange(self.num_levels) * self.codebook_size
    x = nn.Embed(self.num_levels * self.codebook_size, c.embed_dim)(codes + offsets).sum(2)
    # Whether each level repeats the previous frame's code: loops and stuck
    # codes are a generator's tell that summed embeddings hide.
    repeats = jnp.concatenate([jnp.zeros_like(codes[:, :1]), codes[:, 1:] == codes[:, :-1]], 1)
    x = x + nn.Dense(c.embed_dim)(repeats.astype(x.dtype))
    for _ in range(2):
      x = nn.gelu(nn.Conv(c.hidden_dim, (c.kernel_size,), padding="VALID")(x))
    x = nn.gelu(nn.Dense(c.hidden_dim)(x.mean(1)))
    return nn.Dense(1)(x)[:, 0]


def _check_clips(clips: Sequence[np.ndarray], name: str, codebook_size: int,
                 window: int) -> list[np.ndarray]:
  checked = []
  for i, codes in enumerate(clips):
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
      raise ValueError(f"{name} clip {i}: expected integer codes [frames, levels], got "
                       f"{codes.dtype} of shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
      raise ValueError(f"{name} clip {i}: codes must lie in [0, {codebook_size}), got "
                       f"[{codes.min()}, {codes.max()}]")
    if codes.shape[0] < window:
      raise ValueError(f"{name} clip {i} has {codes.shape[0]} frames, fewer than one "
                       f"window of {window}")
    checked.append(codes.astype(np.int32))
  return checked


def split_groups(groups: Sequence, test_fraction: float, seed: int) -> set:
  """The held-out groups: a seeded `test_fraction` of them, at least one."""
  unique = sorted(set(groups), key=str)
  order = np.random.default_rng(seed).permutation(len(unique))
  count = max(1, round(test_fraction * len(unique)))
  return {unique[i] for i in order[:count]}


def _windows(clip: np.ndarray, window: int) -> np.ndarray:
  """Non-overlapping windows covering the clip (the last one ends at its end)."""
  starts = sorted(set(range(0, clip.shape[0] - window + 1, window)) | {clip.shape[0] - window})
  return np.stack([clip[s:s + window] for s in starts])


def evaluate(real: Sequence[np.ndarray], generated: Sequence[np.ndarray], *,
             codebook_size: int, real_groups: Sequence | None = None,
             generated_groups: Sequence | None = None,
             config: DetectorConfig = DetectorConfig()) -> dict:
  """Trains the detector on some clips of each kind and scores it on the rest.

  real, generated: int codes [frames, levels] per clip (any lengths of at
  least one window). Groups (default: one per clip) are held out whole, so
  clips of one group never sit on both sides of the split. Returns accuracy
  (held-out windows, the mean of the two classes' accuracies, so 0.5 is
  chance whatever the balance), clip_accuracy (a clip's mean logit decides),
  train_accuracy and the counts.
  """
  window = config.window_frames
  real = _check_clips(real, "real", codebook_size, window)
  generated = _check_clips(generated, "generated", codebook_size, window)
  levels = {c.shape[1] for c in real + generated}
  if len(levels) > 1:
    raise ValueError(f"clips have different numbers of levels: {sorted(levels)}")
  real_groups = (list(real_groups) if real_groups is not None
                 else [("real", i) for i in range(len(real))])
  generated_groups = (list(generated_groups) if generated_groups is not None
                      else [("generated", i) for i in range(len(generated))])
  if len(real_groups) != len(real) or len(generated_groups) != len(generated):
    raise ValueError("real_groups and generated_groups need one group per clip")
  # Real groups are split first; generated clips of a group without real ones
  # are split on their own, so each kind gets its share of held-out clips.
  held_out = split_groups(real_groups, config.test_fraction, config.seed)
  generated_only = [g for g in generated_groups if g not in set(real_groups)]
  if generated_only:
    held_out |= split_groups(generated_only, config.test_fraction, config.seed + 1)
  split = {}
  for label, clips, groups in ((0, real, real_groups), (1, generated, generated_groups)):
    name = ("real", "generated")[label]
    train = [c for c, g in zip(clips, groups) if g not in held_out]
    test = [c for c, g in zip(clips, groups) if g in held_out]
    if len(train) < 2 or not test:
      raise ValueError(
          f"too few {name} clips for the detector: {len(clips)} clips give {len(train)} to "
          f"train on and {len(test)} held out (test_fraction={config.test_fraction}); it "
          "needs at least 2 and 1 of each kind")
    split[label] = train, test
  model = TokenClassifier(levels.pop(), codebook_size, config)
  params = _train(model, split[0][0], split[1][0], config)
  def clip_logits(clips):
    """Each clip's window logits, from one batch of every window of the clips
    (padded to a multiple of 64 windows, so that few shapes compile)."""
    windows = [_windows(c, window) for c in clips]
    batch = np.concatenate(windows)
    padded = np.zeros((-(-len(batch) // 64) * 64,) + batch.shape[1:], batch.dtype)
    padded[:len(batch)] = batch
    logits = np.asarray(_logits(params, padded, model=model))[:len(batch)]
    return np.split(logits, np.cumsum([len(w) for w in windows])[:-1])

  result = {}
  for prefix, index in (("train_", 0), ("", 1)):
    real_logits, generated_logits = (clip_logits(split[label][index]) for label in (0, 1))
    result[f"{prefix}accuracy"] = float(np.mean(np.concatenate(real_logits) <= 0)
                                        + np.mean(np.concatenate(generated_logits) > 0)) / 2
    result[f"{prefix}clip_accuracy"] = float(np.mean([l.mean() <= 0 for l in real_logits])
                                             + np.mean([l.mean() > 0 for l in generated_logits])
                                             ) / 2
  result |= {"test_real_windows": int(sum(len(l) for l in real_logits)),
             "test_generated_windows": int(sum(len(l) for l in generated_logits))}
  result |= {"train_real_clips": len(split[0][0]), "train_generated_clips": len(split[1][0]),
             "test_real_clips": len(split[0][1]), "test_generated_clips": len(split[1][1])}
  return result


@functools.partial(jax.jit, static_argnames=("model", "learning_rate"))
def _step(params, opt_state, codes, labels, *, model, learning_rate):
  def loss_fn(params):
    return optax.sigmoid_binary_cross_entropy(model.apply(params, codes), labels).mean()
  grads = jax.grad(loss_fn)(params)
  updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


@functools.partial(jax.jit, static_argnames="model")
def _logits(params, codes, *, model):
  return model.apply(params, codes)


def _train(model: TokenClassifier, real: list, generated: list, config: DetectorConfig):
  """Adam on the logistic loss over random windows, half of each kind per batch."""
  rng = np.random.default_rng(config.seed)
  window = config.window_frames
  params = model.init(jax.random.key(config.seed),
                      np.zeros((1, window, real[0].shape[1]), np.int32))
  opt_state = optax.adam(config.learning_rate).init(params)
  half = config.batch_size // 2
  labels = np.repeat(np.array([0.0, 1.0], np.float32), half)
  for _ in range(config.steps):
    batch = [_crop(clips[i], window, rng) for clips in (real, generated)
             for i in rng.integers(len(clips), size=half)]
    params, opt_state = _step(params, opt_state, np.stack(batch), labels, model=model,
                              learning_rate=config.learning_rate)
  return params


def _crop(clip: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
  start = rng.integers(clip.shape[0] - window + 1)
  return clip[start:start + window]
