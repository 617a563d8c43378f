"""Fits the k-means of semantic tokens on a w2v-BERT or HuBERT layer's embeddings.

    python -m soundlm.semantic.fit_kmeans --w2v_bert_workdir=/tmp/w2v_bert_tiny \\
        --out=/tmp/w2v_bert_tiny/kmeans.npz
    python -m soundlm.semantic.fit_kmeans --hf_dir=/models/w2v-bert-2.0 --layer=17 \\
        --num_clusters=1024 --corpus=folder:/data/librispeech --out=kmeans.npz
    python -m soundlm.semantic.fit_kmeans --hf_dir=/models/hubert-base-ls960 --layer=6 \\
        --num_clusters=500 --corpus=folder:/data/librispeech --out=hubert_kmeans.npz

Embeddings come from non-overlapping windows of every clip of one split of a
corpus: `--corpus` is 'builtin:speech' (the default), 'folder:<path>' (any
folder of 16 kHz mono audio files, split as the data jobs split it) or
'tfds:<name>'; `--corpus_root` is a corpus made by `soundlm.io.corpus.make`.
The remainder of each clip shorter than a window is not used, and the log says
how much that was. The k-means file records the model's fingerprint.

The corpus streams through once: `--max_rows` keeps a uniform random sample
of the embeddings (reservoir sampling) instead of all of them. Each batch of
the fit is split over every device (`--no-mesh`: one device). Started on
several hosts (the multi-host flags of `soundlm.train`), each host embeds
every process_count-th clip, the fit runs over all hosts' rows with
collectives, and host 0 writes the file.
"""
import argparse
import itertools
import logging
import os

import jax
import numpy as np

from soundlm import partitioning
from soundlm.io import sources
from soundlm.semantic.api import SemanticEmbedder, run_config
from soundlm.semantic.config import read_token_config
from soundlm.semantic.features import SAMPLE_RATE
from soundlm.semantic.kmeans import KMeans, fit_kmeans


def _windows(waveforms, window: int, unused: list):
  """Non-overlapping windows of each waveform, in order; the samples left over
  at each clip's end are added to unused[0]."""
  for wav in waveforms:
    count = wav.size // window
    yield from (wav[i * window:(i + 1) * window] for i in range(count))
    unused[0] += wav.size - count * window


class _Reservoir:
  """A uniform random sample of at most `size` rows of a stream (Vitter's
  algorithm R), so a corpus of any length fits in memory."""

  def __init__(self, size: int | None, seed: int):
    self.size, self.rng, self.seen, self.rows = size, np.random.default_rng(seed), 0, []

  def add(self, rows: np.ndarray):
    if self.size is None:
      self.rows.append(rows)
      self.seen += len(rows)
      return
    kept = sum(len(r) for r in self.rows)
    fill = rows[:max(self.size - kept, 0)]
    if len(fill):
      self.rows.append(fill)
    rest = rows[len(fill):]
    if len(rest):
      self.rows = [np.concatenate(self.rows)]
      index = self.seen + len(fill) + np.arange(len(rest))
      slots = (self.rng.random(len(rest)) * (index + 1)).astype(np.int64)
      taken = slots < self.size
      self.rows[0][slots[taken]] = rest[taken]  # in stream order: a later row wins a slot
    self.seen += len(rows)

  def sample(self) -> np.ndarray:
    return np.concatenate(self.rows)


def collect_embeddings(embedder: SemanticEmbedder, waveforms, window_seconds: float = 4.0,
                       batch_size: int = 8, max_rows: int | None = None,
                       seed: int = 0) -> tuple[np.ndarray, float]:
  """([frames, width] embeddings of the full windows of `waveforms` (any
  iterable, read once), seconds left unused). With `max_rows`, a uniform
  random sample of that many embeddings is kept while streaming."""
  if max_rows is not None and max_rows < 1:
    raise ValueError(f"max_rows must be >= 1, got {max_rows}")
  window, unused = int(window_seconds * SAMPLE_RATE), [0]
  reservoir = _Reservoir(max_rows, seed)
  windows = _windows(waveforms, window, unused)
  while batch := list(itertools.islice(windows, batch_size)):
    embeddings = np.asarray(embedder.embed(np.stack(batch).astype(np.float32)))
    reservoir.add(embeddings.reshape(-1, embedder.config.width))
  if not reservoir.seen:
    raise ValueError(f"no clip is as long as one window of {window_seconds} s")
  if max_rows is not None and reservoir.seen > max_rows:
    logging.info("kept a random %d of %d embeddings (--max_rows)", max_rows, reservoir.seen)
  return reservoir.sample(), unused[0] / SAMPLE_RATE


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--w2v_bert_workdir", help="soundlm.train work dir of a pre-training run")
  source.add_argument("--hf_dir", help="local Hugging Face HuBERT or w2v-BERT 2.0 folder")
  parser.add_argument("--layer", type=int, help="hidden-state index (default: the run's "
                      "TokenConfig.layer; required with --hf_dir)")
  parser.add_argument("--num_clusters", type=int, help="K (default: the run's "
                      "TokenConfig.num_clusters, else 1024)")
  corpus_source = parser.add_mutually_exclusive_group()
  corpus_source.add_argument("--corpus", default="builtin:speech",
                             help="builtin:speech, folder:<path> or tfds:<name>")
  corpus_source.add_argument("--corpus_root", help="root of a corpus made by "
                             "soundlm.io.corpus.make (its speech/ folder)")
  parser.add_argument("--data_dir", help="TFDS data_dir of a tfds: corpus")
  parser.add_argument("--split", default="train")
  parser.add_argument("--window_seconds", type=float, default=4.0)
  parser.add_argument("--update", default="lloyd", choices=("lloyd", "minibatch"))
  parser.add_argument("--num_iters", type=int, default=50)
  parser.add_argument("--max_rows", type=int, help="fit on a uniform random sample of this "
                      "many embeddings (per host), drawn while the corpus streams by")
  parser.add_argument("--mesh", action=argparse.BooleanOptionalAction, default=True,
                      help="split each batch of the fit over every device (of every host)")
  partitioning.add_distributed_flags(parser)
  parser.add_argument("--out", required=True, help="k-means file to write (.npz)")
  args = parser.parse_args(argv)
  if args.max_rows is not None and args.max_rows < 1:
    parser.error(f"--max_rows must be >= 1, got {args.max_rows}")
  partitioning.initialize_from_flags(args, parser)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)  # orbax, imported with the models, adds a handler
  corpus = args.corpus
  if args.corpus_root:
    corpus = f"folder:{os.path.join(args.corpus_root, 'speech')}"
    if not os.path.isdir(corpus[len("folder:"):]):
      parser.error(f"--corpus_root {args.corpus_root} has no speech/ folder (the layout of "
                   f"soundlm.io.corpus.make); for any folder of audio files use "
                   f"--corpus=folder:{args.corpus_root}")
  if args.w2v_bert_workdir:
    tokens = read_token_config(run_config(args.w2v_bert_workdir))
    layer = tokens.layer if args.layer is None else args.layer
    num_clusters = args.num_clusters or tokens.num_clusters
    embedder = SemanticEmbedder.load(args.w2v_bert_workdir, layer)
  else:
    if args.layer is None:
      parser.error("--layer is required with --hf_dir")
    layer, num_clusters = args.layer, args.num_clusters or 1024
    embedder = SemanticEmbedder.from_hf(args.hf_dir, layer)
  # Each host embeds every process_count-th clip; the fit joins all hosts' rows.
  clips = itertools.islice(sources.waveforms(corpus, args.split, data_dir=args.data_dir,
                                             sample_rate=SAMPLE_RATE),
                           jax.process_index(), None, jax.process_count())
  num_clips = itertools.count()
  clips = (wav for wav, _ in zip(clips, num_clips))
  embeddings, unused = collect_embeddings(embedder, clips, args.window_seconds,
                                          max_rows=args.max_rows, seed=jax.process_index())
  logging.info("%d embeddings of layer %d from %d clips of %s on this host (%.1f s in "
               "partial windows unused)", len(embeddings), layer, next(num_clips), corpus,
               unused)
  kmeans, inertia = fit_kmeans(embeddings, num_clusters, update=args.update,
                               num_iters=args.num_iters, layer=layer,
                               model=embedder.fingerprint(),
                               mesh=partitioning.make_mesh() if args.mesh else None,
                               on_iteration=lambda i, inertia: logging.info(
                                   "k-means iteration %d/%d: inertia %.4g", i, args.num_iters,
                                   inertia))
  if jax.process_index() == 0:
    kmeans.save(args.out)
    logging.info("wrote %s: K=%d, inertia %.4g -> %.4g", args.out, num_clusters, inertia[0],
                 inertia[-1])
  return kmeans


if __name__ == "__main__":
  main()
