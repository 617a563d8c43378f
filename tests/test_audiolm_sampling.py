"""Per-stage generation: prompts kept, windows and chunks consistent with the
decoder, valid ids only, reproducibility and clear errors on bad input."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from soundlm.audiolm import layouts, sampling
from soundlm.audiolm.decoding import Decoder, SamplingConfig
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig

CONFIG = ModelConfig(num_layers=1, num_heads=2, head_dim=8, embed_dim=16, mlp_dim=32,
                     dropout_rate=0.0, num_buckets=8, max_distance=16)
SIZES = dict(semantic_vocab=6, codebook_size=5, num_levels=4, num_coarse_levels=2)
# Tiny crops so that a few frames already need several windows:
# stage 1: 10 tokens, stage 2: 6 semantic frames (12 acoustic), stage 3: 5 frames.
CROPS = {"semantic": 0.4, "coarse": 0.24, "fine": 0.1}
GREEDY = SamplingConfig(temperature=0.0)
SAMPLED = SamplingConfig(temperature=1.0, top_k=4)


@pytest.fixture(scope="module")
def stages():
  result = {}
  for i, stage in enumerate(layouts.STAGES):
    layout = Layout(stage, crop_seconds=CROPS[stage], **SIZES)
    model = DecoderLM(CONFIG, layout.padded_vocab_size)
    params = jax.jit(model.init)(jax.random.key(i, impl="rbg"),
                                 np.zeros((1, 4), np.int32))["params"]
    result[stage] = Decoder(model, layout), nn.meta.unbox(params)
  return result


def _greedy(decoder, params, prompt, steps, offset):
  return np.asarray(decoder.generate(params, prompt, jax.random.key(0), num_steps=steps,
                                     target_offset=offset, config=GREEDY))


def test_semantic_sliding_window(stages):
  decoder, params = stages["semantic"]
  prompt = np.array([[1, 2, 3], [5, 0, 4]])
  out = sampling.generate_semantic(decoder, params, prompt, 13, jax.random.key(0),
                                   config=GREEDY, context_frames=4)
  assert out.shape == (2, 16)
  np.testing.assert_array_equal(out[:, :3], prompt)
  # Window 1: the prompt then 7 tokens; window 2: the last 4 tokens, then 6.
  first = _greedy(decoder, params, layouts.semantic_sequence(prompt, 6), 7, 3)
  np.testing.assert_array_equal(out[:, 3:10], first - layouts.NUM_SPECIAL)
  second = _greedy(decoder, params, layouts.semantic_sequence(out[:, 6:10], 6), 6, 4)
  np.testing.assert_array_equal(out[:, 10:], second - layouts.NUM_SPECIAL)

  sampled = sampling.generate_semantic(decoder, params, prompt, 13, jax.random.key(1),
                                       config=SAMPLED, context_frames=4)
  assert sampled.min() >= 0 and sampled.max() < 6
  np.testing.assert_array_equal(sampled, sampling.generate_semantic(
      decoder, params, prompt, 13, jax.random.key(1), config=SAMPLED, context_frames=4))


def test_coarse_windows_continue_the_acoustic_prompt(stages):
  decoder, params = stages["coarse"]
  layout = decoder.layout
  rng = np.random.default_rng(0)
  semantic = rng.integers(0, 6, (2, 9))
  prompt = rng.integers(0, 5, (2, 4, 4))  # 4 frames = 2 semantic frames, all levels
  out = sampling.generate_coarse(decoder, params, semantic, jax.random.key(0),
                                 prompt_codes=prompt, config=GREEDY, context_frames=2)
  assert out.shape == (2, 18, 2)
  np.testing.assert_array_equal(out[:, :4], prompt[..., :2])
  # Window 2 covers semantic frames 4..9; its first 4 acoustic frames are context.
  window = layouts.with_start(layouts.semantic_ids(semantic[:, 4:9], 6),
                              layout.target_ids(out[:, 8:12]))
  second = _greedy(decoder, params, window, 6 * 2, 4 * 2)
  np.testing.assert_array_equal(out[:, 12:], layout.targets_from_ids(second))


def test_fine_chunks_keep_the_prompt_and_run_independently(stages):
  decoder, params = stages["fine"]
  layout = decoder.layout
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 5, (2, 12, 4))
  prompt = codes[:, :7]
  out = sampling.generate_fine(decoder, params, codes[..., :2], jax.random.key(0),
                               prompt_codes=prompt, config=GREEDY)
  assert out.shape == (2, 12, 4)
  np.testing.assert_array_equal(out[..., :2], codes[..., :2])
  np.testing.assert_array_equal(out[:, :7], prompt)
  # Chunks [0, 5) (prompt), [5, 10) (2 prompt frames), [10, 12) (none).
  def chunk(start, end, known):
    sequence = layouts.with_start(
        layouts.acoustic_ids(codes[:, start:end, :2], layouts.NUM_SPECIAL, 5),
        layout.target_ids(out[:, start:start + known, 2:]))
    ids = _greedy(decoder, params, sequence, (end - start - known) * 2, known * 2)
    return layout.targets_from_ids(ids)
  np.testing.assert_array_equal(out[:, 7:10, 2:], chunk(5, 10, 2))
  np.testing.assert_array_equal(out[:, 10:, 2:], chunk(10, 12, 0))


@pytest.mark.parametrize("stage, call, match", [
    ("semantic", lambda d, p: sampling.generate_semantic(d, p, [[6]], 3, jax.random.key(0)),
     "ids|semantic"),
    ("semantic", lambda d, p: sampling.generate_semantic(d, p, np.zeros((1, 10), int), 3,
                                                         jax.random.key(0)), "window"),
    ("semantic", lambda d, p: sampling.generate_semantic(d, p, np.zeros((1, 2), int), 2.5,
                                                         jax.random.key(0)), "num_frames"),
    ("coarse", lambda d, p: sampling.generate_coarse(
        d, p, np.zeros((1, 8), int), jax.random.key(0),
        prompt_codes=np.zeros((1, 3, 2), int)), "whole number"),
    ("coarse", lambda d, p: sampling.generate_coarse(
        d, p, np.zeros((1, 8), int), jax.random.key(0),
        prompt_codes=np.zeros((1, 12, 2), int)), "window"),
    ("coarse", lambda d, p: sampling.generate_coarse(
        d, p, np.zeros((1, 8), int), jax.random.key(0),
        prompt_codes=np.full((1, 2, 2), 5)), "prompt_codes"),
    ("coarse", lambda d, p: sampling.generate_coarse(
        d, p, np.zeros((1, 2), int), jax.random.key(0),
        prompt_codes=np.zeros((1, 6, 2), int)), "cover"),
    ("fine", lambda d, p: sampling.generate_fine(
        d, p, np.zeros((1, 4, 2), int), jax.random.key(0),
        prompt_codes=np.ones((1, 2, 4), int)), "differ"),
    ("fine", lambda d, p: sampling.generate_fine(
        d, p, np.zeros((1, 4), int), jax.random.key(0)), "dimensions"),
    ("fine", lambda d, p: sampling.generate_semantic(
        d, p, np.zeros((1, 4), int), 2, jax.random.key(0)), "semantic stage"),
])
def test_bad_input_is_refused(stages, stage, call, match):
  decoder, params = stages[stage]
  with pytest.raises(ValueError, match=match):
    call(decoder, params)
