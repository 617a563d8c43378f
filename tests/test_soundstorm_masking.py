"""The paper's training mask and the cosine decoding schedule."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.soundstorm import masking, schedule


@pytest.fixture(scope="module")
def many_masks():
  sample = jax.jit(masking.sample_training_mask, static_argnums=(1, 2, 3))
  return jax.device_get(sample(jax.random.key(0), 4000, 512, 4))


def test_prompt_frames_never_masked(many_masks):
  m = many_masks
  frames = np.arange(m.input_mask.shape[1])
  before = frames[None, :] < m.prompt_len[:, None]
  assert not m.input_mask[before].any()
  assert m.prompt_len.min() == 0 and m.prompt_len.max() == 511


def test_finer_levels_masked_and_coarser_visible_after_prompt(many_masks):
  m = many_masks
  frames = np.arange(m.input_mask.shape[1])
  after = frames[None, :] >= m.prompt_len[:, None]
  levels = np.arange(m.input_mask.shape[2])
  finer = levels[None, :] > m.level[:, None]
  coarser = levels[None, :] < m.level[:, None]
  finer_tokens = after[:, :, None] & finer[:, None, :]
  assert m.input_mask[finer_tokens].all()
  assert not (m.input_mask & coarser[:, None, :]).any()
  assert np.bincount(m.level, minlength=4).min() > 900  # q uniform over 4 levels


def test_level_q_masked_fraction_follows_cosine_schedule(many_masks):
  m = many_masks
  batch = np.arange(len(m.level))
  at_q = m.input_mask[batch, :, m.level]  # [B, T]
  after = np.arange(at_q.shape[1])[None, :] >= m.prompt_len[:, None]
  num_after = after.sum(axis=1)
  long_enough = num_after >= 256
  fraction = at_q.sum(axis=1)[long_enough] / num_after[long_enough]
  # p = cos(u), u ~ U[0, pi/2): P(p <= x) = 1 - 2/pi * arccos(x); mean 2/pi.
  assert abs(fraction.mean() - 2 / math.pi) < 0.02
  xs = np.linspace(0.05, 0.95, 19)
  empirical = (fraction[:, None] <= xs[None, :]).mean(axis=0)
  expected = 1 - 2 / math.pi * np.arccos(xs)
  assert np.abs(empirical - expected).max() < 0.05
  # Uniform masking (p ~ U[0, 1]) would give P(p <= 0.5) = 0.5, not 1/3.
  assert abs(empirical[9] - 1 / 3) < 0.05


def test_loss_mask_is_exactly_the_masked_tokens_of_level_q(many_masks):
  m = many_masks
  at_q = np.arange(m.input_mask.shape[2])[None, :] == m.level[:, None]
  np.testing.assert_array_equal(m.loss_mask, m.input_mask & at_q[:, None, :])


def test_remaining_masked_follows_cosine_and_always_progresses():
  def run(num_masked, iterations):
    previous, out = jnp.int32(num_masked), []
    for i in range(iterations):
      previous = schedule.remaining_masked(num_masked, jnp.int32(i),
                                           jnp.int32(iterations), previous)
      out.append(int(previous))
    return out

  counts = run(1000, 16)
  expected = [math.floor(1000 * math.cos(math.pi / 2 * (i + 1) / 16)) for i in range(16)]
  assert counts[:-1] == expected[:-1] and counts[-1] == 0
  assert run(5, 16) == [4, 3, 2, 1] + [0] * 12  # at least one token per iteration
  assert run(7, 1) == [0]


@pytest.mark.parametrize("bad", [(16, 1), (16, 0, 1), (16, 1, 1, 1), (2.5, 1, 1)])
def test_bad_schedule_is_refused(bad):
  with pytest.raises(ValueError, match="schedule"):
    schedule.check_schedule(bad, 3)


def test_paper_schedule_has_27_passes_for_12_levels():
  assert sum(schedule.check_schedule(schedule.paper_schedule(12), 12)) == 27


def test_prompt_boundary_stays_inside_real_frames():
  lengths = jnp.array([1, 2, 7, 64] * 250)
  m = masking.sample_training_mask(jax.random.key(1), 1000, 64, 3, lengths)
  assert (m.prompt_len < np.maximum(lengths, 1)).all()
  assert set(np.asarray(m.prompt_len[2::4])) == set(range(7))


def test_unprompted_examples_start_masking_at_the_first_frame():
  key = jax.random.key(2)
  paper = masking.sample_training_mask(key, 2000, 32, 3)
  half = masking.sample_training_mask(key, 2000, 32, 3, unprompted_rate=0.5)
  unprompted = np.asarray(half.prompt_len != paper.prompt_len)
  assert 0.45 < (np.asarray(half.prompt_len) == 0).mean() < 0.55
  # The other draws are the paper's: only the boundary of some examples moves.
  assert (np.asarray(half.prompt_len)[unprompted] == 0).all()
  np.testing.assert_array_equal(half.level, paper.level)
  np.testing.assert_array_equal(half.ratio, paper.ratio)
  with pytest.raises(ValueError, match="unprompted_rate"):
    masking.sample_training_mask(key, 4, 32, 3, unprompted_rate=1.5)
