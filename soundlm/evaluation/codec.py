"""The codec suite: quality against bitrate, one row per number of RVQ levels.

Every held-out clip is encoded once with all the codec's levels; each row
decodes the first q levels (an RVQ's first q codes are what a q-level encode
gives), and each decoded clip is scored against its input with
`metrics.score` at 16 kHz. A codec of another rate gets the clips resampled
to its rate and its output resampled back. Baseline rows (`baselines`) score
outputs that need no codec, on the same clips. This is the AudioLM paper's
ViSQOL-against-bitrate table, with more figures per row.
"""
import math
from typing import Sequence

import numpy as np

from soundlm.evaluation import baselines as baselines_lib
from soundlm.evaluation import metrics as metrics_lib
from soundlm.evaluation.progress import Progress
from soundlm.io.audio import resample

RATE = metrics_lib.SAMPLE_RATE


def check_levels(codec, levels) -> list[int]:
  """Sorted distinct levels, each in 1..Q (default: every level)."""
  if levels is None:
    return list(range(1, codec.num_levels + 1))
  chosen = sorted({int(q) for q in levels})
  bad = [q for q in chosen if not 1 <= q <= codec.num_levels]
  if bad or not chosen:
    raise ValueError(f"levels {bad or 'none given'}: this codec has {codec.num_levels} RVQ "
                     f"levels (choose among 1..{codec.num_levels})")
  return chosen


def kbps(codec, levels: int) -> float:
  """Bitrate of `levels` levels: bits per code times codes per second."""
  return levels * math.log2(codec.codebook_size) * codec.frame_rate / 1000.0


def check_clips(clips) -> None:
  """Held-out clips must be non-silent mono audio at 16 kHz."""
  if not clips:
    raise ValueError("the codec suite got no clips")
  for clip in clips:
    if clip.sample_rate != RATE:
      raise ValueError(f"clip {clip.id}: {clip.sample_rate} Hz, but the codec suite scores "
                       f"at {RATE} Hz; give 16 kHz clips (the codec's own rate is handled)")
    if clip.waveform.ndim != 1 or not np.any(clip.waveform):
      raise ValueError(f"clip {clip.id}: expected non-silent mono audio, got shape "
                       f"{clip.waveform.shape}")


def _fit(wav: np.ndarray, length: int) -> np.ndarray:
  """`wav` cut or zero-padded to `length` samples (resampling rounds lengths)."""
  return np.pad(wav[:length], (0, max(length - wav.size, 0)))


def _decoded_batches(codec, clips, levels, batch_size):
  """Yields (clip indices, {q: 16 kHz decodes of those clips}) batch by batch.

  Every batch has the same shape (clips padded with zeros to the longest, and
  the last batch filled with silent rows), so encode compiles once and decode
  once per level count."""
  inputs = [resample(c.waveform.astype(np.float32), RATE, codec.sample_rate) for c in clips]
  length = -(-max(w.size for w in inputs) // codec.hop_length) * codec.hop_length
  batch_size = min(batch_size, len(clips))
  for start in range(0, len(clips), batch_size):
    indices = list(range(start, min(start + batch_size, len(clips))))
    batch = np.zeros((batch_size, length), np.float32)
    for row, i in enumerate(indices):
      batch[row, :inputs[i].size] = inputs[i]
    codes = codec.encode(batch, sample_rate=codec.sample_rate)
    decoded = {}
    for q in levels:
      wav = np.asarray(codec.decode(codes[..., :q]))
      decoded[q] = [_fit(resample(wav[row, :inputs[i].size], codec.sample_rate, RATE),
                         clips[i].waveform.size) for row, i in enumerate(indices)]
    yield indices, decoded


def _summary(values: Sequence[float]) -> dict:
  defined = [v for v in values if math.isfinite(v)]
  return {"mean": float(np.mean(defined)) if defined else math.nan,
          "std": float(np.std(defined)) if defined else math.nan,
          "defined": len(defined), "undefined": len(values) - len(defined)}


def evaluate_codec(codec, clips, *, levels=None, metrics=metrics_lib.METRICS,
                   baselines=baselines_lib.BASELINES, batch_size: int = 8, seed: int = 0,
                   progress: bool = True) -> dict:
  """The codec table on `clips` (objects with id, waveform, sample_rate).

  Returns {'rows': [{name, kind, levels, kbps, figures: {metric: {mean, std,
  defined, undefined}}, per_clip: {metric: [...]}}], ...}: one 'codec' row per
  level count, then one 'baseline' row per baseline."""
  check_clips(clips)
  levels = check_levels(codec, levels)
  metrics = metrics_lib.check_metrics(metrics)
  unknown = sorted(set(baselines) - set(baselines_lib.BASELINES))
  if unknown:
    raise ValueError(f"baselines {unknown}: expected some of {baselines_lib.BASELINES}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  delay = round(codec.hop_length * RATE / codec.sample_rate)
  names = [f"{q} level{'s' if q > 1 else ''}" for q in levels]
  rows = [{"name": name, "kind": "codec", "levels": q, "kbps": kbps(codec, q)}
          for name, q in zip(names, levels)]
  rows += [{"name": name, "kind": "baseline", "levels": None,
            "kbps": None if name == "delayed" else 0.0} for name in baselines]
  scores = [{m: [math.nan] * len(clips) for m in metrics} for _ in rows]
  counter = Progress("codec", len(rows) * len(clips), "clip decodes scored", enabled=progress)
  rng = np.random.default_rng(seed)
  seconds = {}
  for indices, decoded in _decoded_batches(codec, clips, levels, batch_size):
    for i, clip_index in enumerate(indices):
      reference = clips[clip_index].waveform.astype(np.float32)
      outputs = [decoded[q][i] for q in levels]
      outputs += [baselines_lib.make(name, reference, rng=rng, delay=delay)
                  for name in baselines]
      for row_scores, estimate in zip(scores, outputs):
        for metric, value in metrics_lib.score(reference, estimate, metrics, seconds).items():
          row_scores[metric][clip_index] = value
        counter.advance()
  for row, row_scores in zip(rows, scores):
    row["figures"] = {m: _summary(v) for m, v in row_scores.items()}
    row["per_clip"] = row_scores
  return {
      "suite": "codec",
      "codec": {"model": type(codec.model).__name__, "sample_rate": codec.sample_rate,
                "frame_rate": codec.frame_rate, "num_levels": codec.num_levels,
                "codebook_size": codec.codebook_size},
      "metric_sample_rate": RATE, "resampled": codec.sample_rate != RATE,
      "delay_samples": delay, "metrics": list(metrics), "seed": seed,
      "metric_seconds_per_clip": {m: t / (len(rows) * len(clips)) for m, t in seconds.items()},
      "clips": [c.id for c in clips],
      "seconds_of_audio": float(sum(c.waveform.size for c in clips) / RATE),
      "rows": rows}
