"""AudioLM token layouts: exact id layout, round trips, alignment and range checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soundlm.audiolm import layouts
from soundlm.audiolm.layouts import Layout

KS, N, Q, QC = 5, 4, 3, 1  # semantic vocab, codebook size, levels, coarse levels


def _codes(rng, shape, high=N):
  return rng.integers(0, high, shape).astype(np.int32)


def test_coarse_sequence_is_semantic_start_then_levels_frame_by_frame():
  semantic = np.array([3, 0])
  codes = np.array([[1, 2, 3], [0, 1, 2], [3, 3, 3], [2, 0, 1]])  # [T=4, Q=3]
  seq = layouts.coarse_sequence(semantic, codes, num_coarse_levels=2, codebook_size=N,
                                semantic_vocab=KS)
  base = 2 + KS
  expected = [2 + 3, 2 + 0, layouts.START_ID,
              base + 1, base + N + 2, base + 0, base + N + 1,
              base + 3, base + N + 3, base + 2, base + N + 0]
  np.testing.assert_array_equal(seq, expected)


def test_fine_sequence_gives_every_level_its_own_range():
  codes = np.array([[1, 2, 3], [0, 1, 2]])
  seq = layouts.fine_sequence(codes, num_coarse_levels=1, codebook_size=N)
  np.testing.assert_array_equal(
      seq, [2 + 1, 2 + 0, layouts.START_ID, 2 + N + 2, 2 + 2 * N + 3, 2 + N + 1, 2 + 2 * N + 2])


@pytest.mark.parametrize("xp", [np, jnp])
def test_round_trips_with_numpy_and_jax(xp):
  rng = np.random.default_rng(0)
  semantic = xp.asarray(rng.integers(0, KS, (2, 3, 6)))
  codes = xp.asarray(_codes(rng, (2, 3, 12, Q)))
  seq1 = layouts.semantic_sequence(semantic, KS)
  seq2 = layouts.coarse_sequence(semantic, codes, QC, N, KS)
  seq3 = layouts.fine_sequence(codes, QC, N)
  for seq in (seq1, seq2, seq3):
    assert isinstance(seq, jax.Array) == (xp is jnp)
    assert seq.dtype == np.int32
  np.testing.assert_array_equal(layouts.semantic_from_sequence(seq1, KS), semantic)
  back_semantic, back_coarse = layouts.coarse_from_sequence(seq2, QC, N, KS)
  np.testing.assert_array_equal(back_semantic, semantic)
  np.testing.assert_array_equal(back_coarse, codes[..., :QC])
  np.testing.assert_array_equal(layouts.fine_from_sequence(seq3, Q, QC, N), codes)


def test_layouts_trace_under_jit():
  codes = jnp.asarray(_codes(np.random.default_rng(1), (2, 4, Q)))
  f = jax.jit(lambda c: layouts.fine_from_sequence(layouts.fine_sequence(c, QC, N), Q, QC, N))
  np.testing.assert_array_equal(f(codes), codes)


def test_misaligned_frame_rates_are_refused():
  with pytest.raises(ValueError, match="frames"):
    layouts.coarse_sequence(np.zeros(3, int), np.zeros((5, Q), int), QC, N, KS)


@pytest.mark.parametrize("call", [
    lambda: layouts.semantic_sequence(np.array([0, KS]), KS),
    lambda: layouts.fine_sequence(np.array([[0, N, 0]]), QC, N),
    lambda: layouts.coarse_sequence(np.array([-1]), np.zeros((2, Q), int), QC, N, KS),
    lambda: layouts.semantic_sequence(np.array([0.5]), KS),
])
def test_out_of_range_ids_are_refused(call):
  with pytest.raises(ValueError):
    call()


def test_inverse_refuses_ids_of_the_wrong_level_or_missing_start():
  seq = np.asarray(layouts.fine_sequence(np.zeros((2, Q), int), QC, N))
  swapped = seq.copy()
  swapped[-2:] = swapped[-2:][::-1]  # fine level 2 where level 1 belongs
  with pytest.raises(ValueError, match="codes"):
    layouts.fine_from_sequence(swapped, Q, QC, N)
  no_start = seq.copy()
  no_start[2] = 2
  with pytest.raises(ValueError, match="START"):
    layouts.fine_from_sequence(no_start, Q, QC, N)


def test_paper_layout_sizes():
  semantic, coarse, fine = (Layout(stage) for stage in layouts.STAGES)
  assert (semantic.vocab_size, coarse.vocab_size, fine.vocab_size) == (1026, 5122, 12290)
  assert all(lay.padded_vocab_size % 128 == 0 for lay in (semantic, coarse, fine))
  # 30 s of semantic tokens; 10 s: 250 semantic + START + 500 frames x 4;
  # 3 s: 150 frames x 4 coarse + START + 150 x 8 fine.
  assert semantic.sequence_length() == 751
  assert coarse.sequence_length() == 2251
  assert fine.sequence_length() == 1801


def test_valid_ranges_cycle_through_the_stage_levels():
  fine = Layout("fine", semantic_vocab=KS, codebook_size=N, num_levels=4,
                num_coarse_levels=1)
  ranges = [fine.valid_range(j) for j in range(4)]
  first = 2 + N
  assert ranges == [(first, first + N), (first + N, first + 2 * N),
                        (first + 2 * N, first + 3 * N), (first, first + N)]
  assert fine.valid_range(4) == (first + N, first + 2 * N)
  assert fine.vocab_size == first + 3 * N
  seq = fine.to_sequence(codes=np.ones((2, 4), int))
  np.testing.assert_array_equal(fine.target_mask(seq), [0] * 2 + [0] + [1] * 6)


def test_layout_rejects_bad_settings():
  with pytest.raises(ValueError, match="stage"):
    Layout("acoustic")
  with pytest.raises(ValueError, match="num_coarse_levels"):
    Layout("fine", num_levels=4, num_coarse_levels=4)
  with pytest.raises(ValueError, match="crop_seconds"):
    Layout("semantic", crop_seconds=0.01)
  with pytest.raises(ValueError, match="multiple"):
    Layout("coarse", semantic_rate_hz=20, acoustic_rate_hz=50)
