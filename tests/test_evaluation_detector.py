"""The synthetic-speech detector: it tells apart token distributions that
differ and scores chance on two samples of one distribution."""
import numpy as np
import pytest

from soundlm.evaluation import detector

CONFIG = detector.DetectorConfig(steps=300)  # windows of 50 frames
FRAMES, LEVELS, CODES = 200, 4, 64


def sticky_codes(num_clips: int, seed: int, stay: float = 0.2) -> np.ndarray:
  """Codes [clips, FRAMES, LEVELS] like a codec's: a skewed code histogram per
  level, and frames that repeat the previous frame's code (probability `stay`)."""
  rng = np.random.default_rng(seed)
  marginal = 1 / np.arange(1, CODES + 1)
  codes = rng.choice(CODES, (num_clips, FRAMES, LEVELS), p=marginal / marginal.sum())
  for t in range(1, FRAMES):
    keep = rng.random((num_clips, LEVELS)) < stay
    codes[:, t][keep] = codes[:, t - 1][keep]
  return codes.astype(np.int32)


@pytest.fixture(scope="module")
def real_codes():
  return sticky_codes(64, seed=0), CODES


def test_frame_order_is_detected(real_codes):
  codes, size = real_codes
  rng = np.random.default_rng(1)
  shuffled = [c[rng.permutation(len(c))] for c in codes[32:]]
  result = detector.evaluate(list(codes[:32]), shuffled, codebook_size=size, config=CONFIG)
  assert result["accuracy"] > 0.75 and result["clip_accuracy"] > 0.75


def test_a_different_code_histogram_is_detected(real_codes):
  codes, size = real_codes
  rng = np.random.default_rng(2)
  skewed = codes[32:].copy()
  redrawn = rng.random(skewed.shape[:2]) < 0.3  # level 0 of 30 % of frames: rare codes
  skewed[..., 0][redrawn] = rng.integers(CODES // 2, CODES, redrawn.sum())
  result = detector.evaluate(list(codes[:32]), list(skewed), codebook_size=size, config=CONFIG)
  assert result["accuracy"] > 0.85


def test_one_distribution_scores_chance_and_groups_stay_together(real_codes):
  codes, size = real_codes
  groups = list(range(32))  # clip i of each side belongs to group i
  result = detector.evaluate(list(codes[:32]), list(codes[32:]), codebook_size=size,
                             real_groups=groups, generated_groups=groups, config=CONFIG)
  assert abs(result["accuracy"] - 0.5) < 0.15
  assert result["train_accuracy"] > result["accuracy"]  # it fits what it trains on
  assert result["test_real_clips"] == result["test_generated_clips"] == round(0.3 * 32)
  assert result["test_real_windows"] == result["test_real_clips"] * FRAMES // 50


def test_too_few_or_malformed_clips_are_refused():
  clip = np.zeros((60, 4), np.int32)
  with pytest.raises(ValueError, match="too few generated clips.*2 clips give 1 to train on"):
    detector.evaluate([clip] * 6, [clip] * 2, codebook_size=8, config=CONFIG)
  with pytest.raises(ValueError, match=r"real clip 1 has 49 frames, fewer than one window"):
    detector.evaluate([clip, clip[:49]], [clip] * 3, codebook_size=8, config=CONFIG)
  with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
    detector.evaluate([clip] * 3, [clip + 8] * 3, codebook_size=8, config=CONFIG)
  with pytest.raises(ValueError, match=r"integer codes \[frames, levels\]"):
    detector.evaluate([clip[:, 0]] * 3, [clip] * 3, codebook_size=8, config=CONFIG)
  with pytest.raises(ValueError, match="different numbers of levels"):
    detector.evaluate([clip] * 3, [clip[:, :2]] * 3, codebook_size=8, config=CONFIG)
