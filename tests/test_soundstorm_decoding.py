"""Level-by-level MaskGIT decoding: pass count, prompt, determinism, errors, sharding."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from soundlm import partitioning
from soundlm.soundstorm import decoding
from soundlm.soundstorm.api import SoundStorm
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel

Q, K, S = 3, 16, 16
BATCH, FRAMES, PROMPT = 2, 24, 5
TENSOR_RULES = (
    ("batch", ("data", "fsdp")), ("length", None), ("embed", None), ("mlp", "tensor"),
    ("heads", "tensor"), ("kv", None), ("vocab", "tensor"), ("levels", None),
    ("conv_in", None), ("conv_out", None))


class CountingModel(SoundStormModel):
  """Reports every executed forward pass to the host."""

  @nn.compact
  def __call__(self, semantic, codes, **kwargs):
    jax.debug.callback(lambda: CALLS.append(1))
    return super().__call__(semantic, codes, **kwargs)


CALLS = []
MODEL_ARGS = dict(semantic_vocab=S, codebook_size=K, num_levels=Q, num_layers=2,
                  embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64)


@pytest.fixture(scope="module")
def storm():
  return SoundStorm.random("tiny", S, K, Q, seed=0, **{
      k: v for k, v in MODEL_ARGS.items() if k not in ("semantic_vocab", "codebook_size",
                                                       "num_levels")})


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  semantic = rng.integers(0, S, (BATCH, FRAMES // 2)).astype(np.int32)
  prompt = rng.integers(0, K, (BATCH, PROMPT, Q)).astype(np.int32)
  return semantic, prompt


@pytest.fixture(scope="module")
def generated(storm, inputs):
  semantic, prompt = inputs
  return storm.generate(semantic, FRAMES, prompt, rng=1, schedule=(4, 2, 1),
                        return_forward_passes=True)


def test_runs_exactly_sum_of_schedule_forward_passes(storm, inputs):
  semantic, prompt = inputs
  model = CountingModel(SoundStormConfig(**MODEL_ARGS))
  CALLS.clear()
  result = decoding.decode(model, storm.variables, semantic, prompt, jax.random.key(0),
                           schedule=(5, 2, 1), num_frames=FRAMES)
  jax.block_until_ready(result.codes)
  jax.effects_barrier()
  assert int(result.forward_passes) == 8
  assert len(CALLS) == 8


def test_prompt_kept_and_every_token_filled(generated, inputs):
  codes, passes = generated
  _, prompt = inputs
  assert passes == 7
  assert codes.shape == (BATCH, FRAMES, Q) and codes.dtype == np.int32
  np.testing.assert_array_equal(codes[:, :PROMPT], prompt)
  assert codes.min() >= 0 and codes.max() < K  # no mask id (K) left


def test_fixed_rng_reproduces_and_other_rng_differs(storm, generated, inputs):
  semantic, prompt = inputs
  again = storm.generate(semantic, FRAMES, prompt, rng=1, schedule=(4, 2, 1))
  other = storm.generate(semantic, FRAMES, prompt, rng=2, schedule=(4, 2, 1))
  np.testing.assert_array_equal(again, generated[0])
  assert (other != generated[0]).any()


def test_single_iteration_levels_are_greedy(storm, inputs):
  semantic, prompt = inputs
  runs = [storm.generate(semantic, FRAMES, prompt, rng=r, schedule=(1, 1, 1))
          for r in (3, 4)]
  np.testing.assert_array_equal(runs[0], runs[1])
  # Greedy level 0 picks the argmax of one pass over the fully masked level.
  masked = np.full((BATCH, FRAMES, Q), K, np.int32)
  masked[:, :PROMPT] = prompt
  logits = jax.jit(storm.model.apply, static_argnames="level")(
      storm.variables, semantic, masked, level=0)
  np.testing.assert_array_equal(runs[0][:, PROMPT:, 0],
                                np.argmax(logits, axis=-1)[:, PROMPT:])


def test_prompt_conditions_the_continuation(storm, generated, inputs):
  semantic, prompt = inputs
  other_prompt = (prompt + 7) % K
  codes = storm.generate(semantic, FRAMES, other_prompt, rng=1, schedule=(4, 2, 1))
  assert (codes[:, PROMPT:] != generated[0][:, PROMPT:]).any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_frames=FRAMES + 2), "align"),
    (dict(num_frames=FRAMES - 1), "align"),
    (dict(prompt_codes=np.zeros((BATCH, FRAMES + 1, Q), np.int32)), "longer"),
    (dict(prompt_codes=np.zeros((BATCH, 3, Q - 1), np.int32)), "prompt_codes"),
    (dict(prompt_codes=np.full((BATCH, 3, Q), K, np.int32)), "prompt_codes ids"),
    (dict(schedule=(16, 1)), "schedule"),
    (dict(schedule=(16, 0, 1)), "schedule"),
    (dict(temperature=0.0), "temperature"),
])
def test_bad_input_is_refused(storm, inputs, kwargs, match):
  semantic, _ = inputs
  with pytest.raises(ValueError, match=match):
    storm.generate(semantic, **{"num_frames": FRAMES, **kwargs})


def test_semantic_ids_out_of_range_are_refused(storm):
  with pytest.raises(ValueError, match="semantic ids"):
    storm.generate(np.full((1, 4), S, np.int32))


@pytest.mark.parametrize("data, tensor", [(2, 4), (8, 1)])
def test_sharded_decode_equals_single_device(storm, generated, inputs, data, tensor):
  semantic, prompt = inputs
  mesh = partitioning.make_mesh(data=data, fsdp=1, tensor=tensor)
  sharded = storm.placed(mesh, TENSOR_RULES)
  if tensor > 1:
    spec = sharded.variables["params"]["head_kernel"].sharding.spec
    assert tuple(spec) == (None, None, "tensor")
  codes = sharded.generate(semantic, FRAMES, prompt, rng=1, schedule=(4, 2, 1))
  np.testing.assert_array_equal(codes, generated[0])
