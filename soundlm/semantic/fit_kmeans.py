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
"""
import argparse
import logging
import os

import numpy as np

from soundlm.io import sources
from soundlm.semantic.api import SemanticEmbedder, run_config
from soundlm.semantic.config import read_token_config
from soundlm.semantic.features import SAMPLE_RATE
from soundlm.semantic.kmeans import KMeans, fit_kmeans


def collect_embeddings(embedder: SemanticEmbedder, waveforms, window_seconds: float = 4.0,
                       batch_size: int = 8) -> tuple[np.ndarray, float]:
  """([frames, width] embeddings of all full windows, seconds left unused)."""
  window = int(window_seconds * SAMPLE_RATE)
  windows, unused = [], 0
  for wav in waveforms:
    count = wav.size // window
    windows.extend(wav[i * window:(i + 1) * window] for i in range(count))
    unused += wav.size - count * window
  if not windows:
    raise ValueError(f"no clip is as long as one window of {window_seconds} s")
  chunks = []
  for start in range(0, len(windows), batch_size):
    batch = np.stack(windows[start:start + batch_size]).astype(np.float32)
    chunks.append(np.asarray(embedder.embed(batch)).reshape(-1, embedder.config.width))
  return np.concatenate(chunks), unused / SAMPLE_RATE


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
  parser.add_argument("--out", required=True, help="k-means file to write (.npz)")
  args = parser.parse_args(argv)
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
  clips = list(sources.waveforms(corpus, args.split, data_dir=args.data_dir,
                                 sample_rate=SAMPLE_RATE))
  embeddings, unused = collect_embeddings(embedder, clips, args.window_seconds)
  logging.info("%d embeddings of layer %d from %d clips of %s (%.1f s in partial windows "
               "unused)", len(embeddings), layer, len(clips), corpus, unused)
  kmeans, inertia = fit_kmeans(embeddings, num_clusters, update=args.update,
                               num_iters=args.num_iters, layer=layer,
                               model=embedder.fingerprint())
  kmeans.save(args.out)
  logging.info("wrote %s: K=%d, inertia %.4g -> %.4g", args.out, num_clusters, inertia[0],
               inertia[-1])
  return kmeans


if __name__ == "__main__":
  main()
