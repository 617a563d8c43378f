"""Generation for each AudioLM stage: prompts, lengths and the paper's windows.

A stage's model only ever sees sequences as long as its training crop, so
long outputs are built window by window:

* stage 1 (`generate_semantic`): a sliding window of `crop_semantic_frames`
  tokens; each new window keeps the last `context_frames` tokens and
  generates the rest.
* stage 2 (`generate_coarse`): windows of `crop_semantic_frames` semantic
  tokens; the coarse codes already generated for a window's first
  `context_frames` semantic frames are its prompt, the rest are generated.
* stage 3 (`generate_fine`): non-overlapping chunks of `crop_acoustic_frames`
  frames, independent, so all chunks of the same shape go through the model
  as one batch.

Acoustic prompts are used, never dropped: stage 2 continues the prompt's
coarse codes and stage 3 keeps the prompt's fine codes and continues from them.
`rng` is a seed, one key, or one key per example (`soundlm.rng.row_keys`);
each example's window w draws with `fold_in(its key, w)` (stage 3: with the
chunk's first frame), so an example's tokens depend on its own key only.
All inputs are [batch, ...] integer arrays; bad prompts or lengths raise
ValueError.
"""
from typing import Optional

import jax
import numpy as np

from soundlm import rng as rng_lib
from soundlm.audiolm import layouts
from soundlm.audiolm.decoding import Decoder, SamplingConfig


def _check_stage(decoder: Decoder, stage: str):
  if decoder.layout.stage != stage:
    raise ValueError(f"expected a decoder of the {stage} stage, got "
                     f"{decoder.layout.stage!r}")


def _tokens(x, ndim: int, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != ndim or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{name} must be an integer array with {ndim} dimensions "
                     f"([batch, ...]), got {x.dtype} of shape {x.shape}")
  return x.astype(np.int32)


def _context(context_frames: Optional[int], window: int) -> int:
  context = window // 2 if context_frames is None else context_frames
  if not 0 < context < window:
    raise ValueError(f"context_frames must be in [1, {window}) (the window), got {context}")
  return context


def generate_semantic(decoder: Decoder, params, prompt, num_frames: int, rng, *,
                      config: SamplingConfig = SamplingConfig(),
                      context_frames: Optional[int] = None) -> np.ndarray:
  """Continues semantic tokens `prompt` [B, P] (P may be 0) by `num_frames`.

  Returns [B, P + num_frames]: the prompt followed by the new tokens.
  """
  _check_stage(decoder, "semantic")
  layout = decoder.layout
  prompt = _tokens(prompt, 2, "prompt")
  layouts.semantic_ids(prompt, layout.semantic_vocab)  # range check
  window = layout.crop_semantic_frames
  context = _context(context_frames, window)
  if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ValueError(f"num_frames must be a positive whole number of semantic frames, "
                     f"got {num_frames!r}")
  if prompt.shape[1] >= window:
    raise ValueError(f"prompt of {prompt.shape[1]} semantic frames does not fit the "
                     f"window of {window} frames with room to generate")
  keys = rng_lib.row_keys(rng, prompt.shape[0])
  tokens, index = prompt, 0
  while tokens.shape[1] < prompt.shape[1] + num_frames:
    known = tokens if index == 0 else tokens[:, -context:]
    steps = min(prompt.shape[1] + num_frames - tokens.shape[1], window - known.shape[1])
    ids = decoder.generate(params, layouts.semantic_sequence(known, layout.semantic_vocab),
                           rng_lib.fold_rows(keys, index), num_steps=steps,
                           target_offset=known.shape[1], config=config)
    tokens = np.concatenate([tokens, layout.targets_from_ids(np.asarray(ids))], axis=1)
    index += 1
  return tokens


def generate_coarse(decoder: Decoder, params, semantic, rng, *, prompt_codes=None,
                    config: SamplingConfig = SamplingConfig(),
                    context_frames: Optional[int] = None) -> np.ndarray:
  """Coarse codes [B, r * S, Q'] for semantic tokens [B, S] (r acoustic frames
  per semantic frame).

  `prompt_codes` [B, Tp, >=Q'] (first Q' levels used) gives the first Tp
  frames; Tp must be a multiple of r and fit in one window. The returned
  codes start with them.
  """
  _check_stage(decoder, "coarse")
  layout = decoder.layout
  r, levels = layout.frames_per_semantic, layout.num_coarse_levels
  semantic = _tokens(semantic, 2, "semantic")
  layouts.semantic_ids(semantic, layout.semantic_vocab)  # range check
  batch, num_semantic = semantic.shape
  if num_semantic < 1:
    raise ValueError("semantic must hold at least one frame")
  if prompt_codes is None:
    prompt_codes = np.zeros((batch, 0, levels), np.int32)
  prompt_codes = _tokens(prompt_codes, 3, "prompt_codes")
  if prompt_codes.shape[0] != batch or prompt_codes.shape[2] < levels:
    raise ValueError(f"prompt_codes must be [{batch}, frames, >={levels}], got shape "
                     f"{prompt_codes.shape}")
  known = prompt_codes[..., :levels]
  layout.target_ids(known, "prompt_codes")  # range check
  window = layout.crop_semantic_frames
  context = _context(context_frames, window)
  num_prompt = known.shape[1]
  if num_prompt % r:
    raise ValueError(f"prompt_codes has {num_prompt} frames, not a whole number of "
                     f"semantic frames ({r} acoustic frames each)")
  if num_prompt > r * num_semantic:
    raise ValueError(f"prompt_codes has {num_prompt} frames but the {num_semantic} "
                     f"semantic tokens cover only {r * num_semantic}")
  if num_prompt and num_prompt >= r * window:
    raise ValueError(f"prompt_codes of {num_prompt} frames does not fit the window of "
                     f"{r * window} frames with room to generate")
  keys = rng_lib.row_keys(rng, batch)
  start, index = 0, 0
  while known.shape[1] < r * num_semantic:
    end = min(num_semantic, start + window)
    in_window = known[:, r * start:]
    prompt = layouts.with_start(layouts.semantic_ids(semantic[:, start:end],
                                                     layout.semantic_vocab),
                                layout.target_ids(in_window))
    new_frames = r * end - known.shape[1]
    ids = decoder.generate(params, prompt, rng_lib.fold_rows(keys, index),
                           num_steps=new_frames * levels,
                           target_offset=in_window.shape[1] * levels, config=config)
    known = np.concatenate([known, layout.targets_from_ids(np.asarray(ids))], axis=1)
    start, index = end - context, index + 1
  return known


def generate_fine(decoder: Decoder, params, coarse, rng, *, prompt_codes=None,
                  config: SamplingConfig = SamplingConfig()) -> np.ndarray:
  """All Q levels [B, T, Q] for coarse codes [B, T, >=Q'] (first Q' levels used).

  `prompt_codes` [B, Tp, Q] (Tp <= T) supplies the fine levels of the first
  Tp frames; its coarse levels must equal `coarse` there.
  """
  _check_stage(decoder, "fine")
  layout = decoder.layout
  levels, fine_levels = layout.num_coarse_levels, layout.target_levels
  coarse = _tokens(coarse, 3, "coarse")
  if coarse.shape[2] < levels or coarse.shape[1] < 1:
    raise ValueError(f"coarse must be [batch, frames>=1, >={levels}], got shape "
                     f"{coarse.shape}")
  coarse = coarse[..., :levels]
  layouts.acoustic_ids(coarse, layouts.NUM_SPECIAL, layout.codebook_size, "coarse")
  batch, num_frames = coarse.shape[:2]
  if prompt_codes is None:
    prompt_codes = np.zeros((batch, 0, layout.num_levels), np.int32)
  prompt_codes = _tokens(prompt_codes, 3, "prompt_codes")
  if prompt_codes.shape[0] != batch or prompt_codes.shape[2] != layout.num_levels:
    raise ValueError(f"prompt_codes must be [{batch}, frames, {layout.num_levels}], got "
                     f"shape {prompt_codes.shape}")
  num_prompt = prompt_codes.shape[1]
  if num_prompt > num_frames:
    raise ValueError(f"prompt_codes has {num_prompt} frames, more than the {num_frames} "
                     "coarse frames")
  if not np.array_equal(prompt_codes[..., :levels], coarse[:, :num_prompt]):
    raise ValueError("prompt_codes' coarse levels differ from coarse on the prompt frames")
  layout.target_ids(prompt_codes[..., levels:], "prompt_codes")  # range check

  fine = np.zeros((batch, num_frames, fine_levels), np.int32)
  fine[:, :num_prompt] = prompt_codes[..., levels:]
  chunk = layout.crop_acoustic_frames
  groups: dict[tuple[int, int], list[int]] = {}  # (length, known frames) -> starts
  for start in range(0, num_frames, chunk):
    length = min(chunk, num_frames - start)
    known = int(np.clip(num_prompt - start, 0, length))
    if known < length:
      groups.setdefault((length, known), []).append(start)
  keys = rng_lib.row_keys(rng, batch)
  for (length, known), starts in sorted(groups.items()):
    rows = lambda x: np.concatenate([x[:, s:s + length] for s in starts])  # noqa: E731
    conditioning = layouts.acoustic_ids(rows(coarse), layouts.NUM_SPECIAL,
                                        layout.codebook_size)
    prompt = layouts.with_start(conditioning, layout.target_ids(rows(fine)[:, :known]))
    # A chunk's rows draw with their example's key and the chunk's first frame.
    chunk_keys = jax.numpy.concatenate([rng_lib.fold_rows(keys, s) for s in starts])
    ids = decoder.generate(params, prompt, chunk_keys,
                           num_steps=(length - known) * fine_levels,
                           target_offset=known * fine_levels, config=config)
    new = layout.targets_from_ids(np.asarray(ids)).reshape(len(starts), batch, -1,
                                                           fine_levels)
    for i, start in enumerate(starts):
      fine[:, start + known:start + length] = new[i]
  return np.concatenate([coarse, fine], axis=-1)
