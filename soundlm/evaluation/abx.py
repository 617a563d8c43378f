"""ABX discrimination of token sequences: do they follow what is said, or who says it?

The distance of two token sequences is the mean cost along their
dynamic-time-warping path, a step costing the distance of the two tokens'
centroids. Two scores (chance 0.5) on clips that carry a sentence and a voice:

* content: A and X are the same sentence read by two voices, B another
  sentence by a third voice; correct when X is closer to A than to B.
* speaker: A and X are the two halves of one clip (one voice, different
  words), B a half of another voice's clip; correct when X is closer to A.

Tokens that follow content score high on the first and near 0.5 on the second.
"""
import functools
import itertools

import numpy as np

BUCKET = 8000  # samples: clips are cut to a multiple of 0.5 s, so few shapes compile


def dtw_distance(a: np.ndarray, b: np.ndarray, centroids: np.ndarray) -> float:
  """Mean step cost along the cheapest monotonic alignment of token sequences
  a and b (steps right, down, diagonal), a step costing the Euclidean distance
  of the two tokens' centroids."""
  if a.size == 0 or b.size == 0:
    raise ValueError(f"dtw_distance: empty token sequence (lengths {a.size}, {b.size})")
  cost = np.linalg.norm(centroids[a][:, None] - centroids[b][None], axis=-1)
  total = np.full((a.size + 1, b.size + 1), np.inf)
  steps = np.zeros((a.size + 1, b.size + 1))
  total[0, 0] = 0.0
  for i in range(1, a.size + 1):
    for j in range(1, b.size + 1):
      moves = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
      k = min(moves, key=lambda m: total[m])
      total[i, j] = total[k] + cost[i - 1, j - 1]
      steps[i, j] = steps[k] + 1
  return float(total[-1, -1] / steps[-1, -1])


def abx(triplets, distance) -> float:
  """Fraction of (a, b, x) with distance(a, x) < distance(b, x), ties half."""
  scores = [0.5 if distance(a, x) == distance(b, x) else float(distance(a, x) < distance(b, x))
            for a, b, x in triplets]
  if not scores:
    raise ValueError("abx: no triplets")
  return float(np.mean(scores))


def content_triplets(clips) -> list[tuple[int, int, int]]:
  """(A, B, X) clip indices: A, X one sentence by two voices; B another
  sentence by a voice that is neither."""
  triplets = []
  for a, x in itertools.permutations(range(len(clips)), 2):
    if clips[a].text != clips[x].text or clips[a].speaker == clips[x].speaker:
      continue
    triplets += [(a, b, x) for b in range(len(clips))
                 if clips[b].text != clips[x].text
                 and clips[b].speaker not in (clips[a].speaker, clips[x].speaker)]
  if not triplets:
    raise ValueError("content ABX needs a sentence read by two voices and another sentence")
  return triplets


def speaker_triplets(speakers) -> list[tuple[int, int, int]]:
  """(A, B, X) half indices (clip i's halves are 2i and 2i+1): A, X the two
  halves of one clip; B the same half of a clip by another voice."""
  triplets = []
  for i, j in itertools.permutations(range(len(speakers)), 2):
    if speakers[i] != speakers[j]:
      triplets += [(2 * i, 2 * j, 2 * i + 1), (2 * i + 1, 2 * j + 1, 2 * i)]
  if not triplets:
    raise ValueError("speaker ABX needs clips by two voices")
  return triplets


def _distance(sequences, centroids):
  """distance(i, j) of sequences i and j (DTW is symmetric: each pair once)."""
  @functools.cache
  def pair(i, j):
    return dtw_distance(sequences[i], sequences[j], centroids)
  return lambda i, j: pair(min(i, j), max(i, j))


def abx_scores(clips, tokens, centroids) -> dict:
  """Content and speaker ABX of the token sequences of `clips`."""
  halves = [half for t in tokens for half in (t[:t.size // 2], t[t.size // 2:])]
  return {"content_abx": abx(content_triplets(clips), _distance(tokens, centroids)),
          "speaker_abx": abx(speaker_triplets([c.speaker for c in clips]),
                             _distance(halves, centroids))}


def tokenize_clips(tokenizer, clips) -> list[np.ndarray]:
  """Token sequences of `clips` (16 kHz), each cut to a multiple of BUCKET samples."""
  out = []
  for clip in clips:
    usable = clip.waveform.size // BUCKET * BUCKET
    if usable == 0:
      raise ValueError(f"{clip.id}: shorter than {BUCKET / 16000} s")
    out.append(np.asarray(tokenizer.tokenize(clip.waveform[None, :usable]))[0])
  return out
