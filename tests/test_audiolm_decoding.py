"""AudioLM model and KV-cached decoding: cache equals full pass, causality,
sampling filters, valid ids only, determinism, sharded equals single-device."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm import partitioning
from soundlm import rng as rng_lib
from soundlm.audiolm.decoding import Decoder, SamplingConfig, mask_invalid, sample_token
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig

CONFIG = ModelConfig(num_layers=2, num_heads=4, head_dim=8, embed_dim=32, mlp_dim=64,
                     dropout_rate=0.0, num_buckets=8, max_distance=16)
LAYOUT = Layout("fine", semantic_vocab=8, codebook_size=8, num_levels=4,
                num_coarse_levels=2, crop_seconds=0.2)
FRAMES = 10
PROMPT_FRAMES = 2  # fine frames already known
STEPS = (FRAMES - PROMPT_FRAMES) * LAYOUT.target_levels
SAMPLED = SamplingConfig(temperature=1.5, top_k=6, top_p=0.95)
GREEDY = SamplingConfig(temperature=0.0)


@pytest.fixture(scope="module")
def setup():
  model = DecoderLM(CONFIG, LAYOUT.padded_vocab_size)
  codes = jax.random.randint(jax.random.key(0), (4, FRAMES, 4), 0, 8)
  sequence = LAYOUT.to_sequence(codes=codes)
  # An rbg key: XLA:CPU compiles its initialisers far faster than threefry.
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(1, impl="rbg"), sequence)["params"])
  prompt_length = LAYOUT.conditioning_length(FRAMES) + PROMPT_FRAMES * LAYOUT.target_levels
  return model, params, sequence, sequence[:, :prompt_length], Decoder(model, LAYOUT)


def _forward(model, params, tokens):
  return jax.jit(model.apply)({"params": params}, tokens)


def _cached_logits(model, params, sequence, chunks):
  cache = jax.jit(Decoder(model, LAYOUT).init_cache, static_argnums=(1, 2))(
      params, *sequence.shape)
  step = jax.jit(lambda c, x: model.apply({"params": params, "cache": c}, x, decode=True,
                                          mutable=["cache"]))
  outputs, start = [], 0
  for size in chunks:
    logits, variables = step(cache, sequence[:, start:start + size])
    outputs.append(logits)
    cache, start = variables["cache"], start + size
  return jnp.concatenate(outputs, axis=1)


def test_cached_decode_logits_equal_the_full_forward_pass(setup):
  model, params, sequence, _, _ = setup
  full = _forward(model, params, sequence)
  length = sequence.shape[1]
  chunks = [7, 3] + [1] * (length - 10)  # prefill, a multi-token chunk, then steps
  np.testing.assert_allclose(_cached_logits(model, params, sequence, chunks), full,
                             atol=2e-5, rtol=1e-5)


def test_model_is_causal(setup):
  model, params, sequence, _, _ = setup
  changed = sequence.at[:, 12].set((sequence[:, 12] + 1) % LAYOUT.vocab_size)
  before = _forward(model, params, sequence)
  after = _forward(model, params, changed)
  np.testing.assert_array_equal(before[:, :12], after[:, :12])
  assert not np.allclose(before[:, 12:], after[:, 12:])


def test_sample_token_filters():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.3, 0.15, 0.0]]) + 1e-9).repeat(4000, 0)
  keys = rng_lib.row_keys(0, logits.shape[0])
  draw = lambda cfg, low=0, high=5: np.asarray(sample_token(logits, keys, low, high, cfg))  # noqa: E731
  assert set(draw(SamplingConfig(temperature=0.0))) == {1}
  assert set(draw(SamplingConfig(top_k=1))) == {1}
  assert set(draw(SamplingConfig(top_k=3))) == {1, 2, 3}
  assert set(draw(SamplingConfig(top_p=0.8))) == {1, 2}  # 0.5 + 0.3 reaches 0.8
  assert set(draw(SamplingConfig(top_p=0.81))) == {1, 2, 3}
  assert set(draw(SamplingConfig(temperature=3.0))) == {0, 1, 2, 3, 4}
  # Only [low, high) may be drawn, however likely the ids outside are.
  assert set(draw(SamplingConfig(temperature=0.0), 2, 4)) == {2}
  assert set(draw(SamplingConfig(temperature=3.0), 3, 5)) == {3, 4}
  frequencies = np.bincount(draw(SamplingConfig()), minlength=5) / 4000
  np.testing.assert_allclose(frequencies, [0.05, 0.5, 0.3, 0.15, 0.0], atol=0.03)


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_k=-1),
                                    dict(top_p=0.0), dict(top_p=1.5)])
def test_sampling_config_rejects_bad_values(kwargs):
  with pytest.raises(ValueError):
    SamplingConfig(**kwargs)


def _check_valid(tokens, target_offset=PROMPT_FRAMES * LAYOUT.target_levels):
  for j in range(tokens.shape[1]):
    low, high = LAYOUT.valid_range(target_offset + j)
    assert np.all((tokens[:, j] >= low) & (tokens[:, j] < high)), j


def test_sampled_ids_are_always_valid_for_their_position(setup):
  model, params, _, prompt, decoder = setup
  # Push the untrained model towards ids that are never valid here.
  kernel = params["logits"]["kernel"]
  bias_invalid = kernel.at[:, LAYOUT.vocab_size:].add(0.5).at[:, :LAYOUT.target_base].add(0.5)
  tilted = {**params, "logits": {"kernel": bias_invalid}}
  tokens = np.asarray(decoder.generate(tilted, prompt, jax.random.key(2),
                                       num_steps=STEPS, target_offset=PROMPT_FRAMES * 2,
                                       config=SAMPLED))
  _check_valid(tokens)


def test_greedy_decode_is_deterministic_and_follows_the_full_pass(setup):
  model, params, _, prompt, decoder = setup
  run = lambda key: np.asarray(decoder.generate(  # noqa: E731
      params, prompt, key, num_steps=STEPS, target_offset=PROMPT_FRAMES * 2, config=GREEDY))
  tokens = run(jax.random.key(0))
  np.testing.assert_array_equal(tokens, run(jax.random.key(1)))
  full = _forward(model, params, jnp.concatenate([prompt, tokens], axis=1))
  for j in range(STEPS):
    low, high = LAYOUT.valid_range(PROMPT_FRAMES * 2 + j)
    expected = jnp.argmax(mask_invalid(full[:, prompt.shape[1] - 1 + j], low, high), -1)
    np.testing.assert_array_equal(tokens[:, j], expected)


def test_sampling_is_reproducible_per_key(setup):
  _, params, _, prompt, decoder = setup
  run = lambda key: np.asarray(decoder.generate(  # noqa: E731
      params, prompt, key, num_steps=STEPS, target_offset=PROMPT_FRAMES * 2, config=SAMPLED))
  first = run(jax.random.key(5))
  np.testing.assert_array_equal(first, run(jax.random.key(5)))
  assert not np.array_equal(first, run(jax.random.key(6)))
  _check_valid(first)


TENSOR_RULES = (("batch", ("data", "fsdp")), ("length", None), ("embed", None),
                ("mlp", "tensor"), ("heads", "tensor"), ("kv", None), ("vocab", "tensor"))


def test_sharded_decode_equals_single_device(setup):
  model, params, _, prompt, decoder = setup
  mesh = partitioning.make_mesh(data=2, fsdp=1, tensor=4)
  sharded = Decoder(model, LAYOUT, partitioning.Partitioner.of(mesh, TENSOR_RULES))
  kwargs = dict(num_steps=STEPS, target_offset=PROMPT_FRAMES * 2)
  expected = decoder.generate(params, prompt, jax.random.key(7), config=SAMPLED, **kwargs)
  got = sharded.generate(params, prompt, jax.random.key(7), config=SAMPLED, **kwargs)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  with partitioning.activate(mesh, TENSOR_RULES):
    cache = jax.jit(sharded.init_cache, static_argnums=(1, 2))(params, 4, 8)
  key_sharding = cache["block_0"]["attention"]["cached_key"].sharding
  assert "data" in key_sharding.spec[0] and key_sharding.spec[2] == "tensor"
  assert tuple(sharded.param_shardings["logits"]["kernel"].spec) == (None, "tensor")
  # A batch that does not divide over the data axes is padded, and the padding dropped.
  odd = sharded.generate(params, prompt[:3], jax.random.key(0), config=GREEDY, **kwargs)
  alone = decoder.generate(params, prompt[:3], jax.random.key(0), config=GREEDY, **kwargs)
  assert odd.shape == (3, STEPS)
  np.testing.assert_array_equal(np.asarray(odd), np.asarray(alone))
