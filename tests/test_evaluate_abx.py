"""The ABX scores (soundlm.evaluation.abx, used by bench.semantic and the
semantic suite of soundlm eval) tell tokens that follow the sentence from
tokens that follow the voice."""
import collections

import numpy as np
import pytest

from soundlm.evaluation import abx

Clip = collections.namedtuple("Clip", "text speaker")
# Three sentences, each read by two of four voices; every voice reads two.
CLIPS = [Clip("s0", "v0"), Clip("s0", "v1"), Clip("s1", "v2"), Clip("s1", "v3"),
         Clip("s2", "v0"), Clip("s2", "v2"), Clip("s3", "v1"), Clip("s3", "v3")]
CENTROIDS = np.eye(16, dtype=np.float32)  # every two distinct tokens equally far apart


def test_dtw_distance_aligns_stretched_sequences():
  a = np.array([1, 2, 3])
  assert abx.dtw_distance(a, a, CENTROIDS) == 0.0
  assert abx.dtw_distance(a, np.array([1, 1, 2, 2, 2, 3]), CENTROIDS) == 0.0
  # One token in four differs after the best alignment: mean cost sqrt(2) / 4.
  b = np.array([1, 2, 3, 4])
  assert abx.dtw_distance(b, np.array([1, 2, 3, 5]), CENTROIDS) == pytest.approx(
      np.sqrt(2) / 4)
  assert (abx.dtw_distance(b, np.array([5, 6, 7]), CENTROIDS)
          == abx.dtw_distance(np.array([5, 6, 7]), b, CENTROIDS))
  with pytest.raises(ValueError, match="empty"):
    abx.dtw_distance(a, a[:0], CENTROIDS)


def _words(text):
  """Eight tokens: the first four and the last four differ within a sentence."""
  base = 1 + 2 * int(text[1:])
  return np.array([base] * 4 + [base + 1] * 4)


def test_tokens_of_the_sentence_score_on_content_not_on_the_voice():
  tokens = [_words(c.text) for c in CLIPS]
  scores = abx.abx_scores(CLIPS, tokens, CENTROIDS)
  assert scores["content_abx"] == 1.0
  assert scores["speaker_abx"] < 0.6, scores


def test_tokens_of_the_voice_score_on_the_voice_not_on_content():
  tokens = [np.full(8, int(c.speaker[1:])) for c in CLIPS]
  scores = abx.abx_scores(CLIPS, tokens, CENTROIDS)
  assert scores["content_abx"] == 0.5  # every voice is equally far: all ties
  assert scores["speaker_abx"] == 1.0


def test_triplets_keep_the_voice_out_of_the_content_decision():
  for a, b, x in abx.content_triplets(CLIPS):
    assert CLIPS[a].text == CLIPS[x].text != CLIPS[b].text
    assert len({CLIPS[a].speaker, CLIPS[b].speaker, CLIPS[x].speaker}) == 3
  with pytest.raises(ValueError, match="two voices"):
    abx.content_triplets([Clip("s0", "v0"), Clip("s1", "v1")])
  with pytest.raises(ValueError, match="two voices"):
    abx.speaker_triplets(["v0", "v0"])
