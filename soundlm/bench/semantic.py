"""Do semantic tokens follow what is said more than who says it?

    python -m soundlm.bench.semantic --size tiny              # pre-trains on CPU first
    python -m soundlm.bench.semantic --size tiny --workdir=/tmp/w2v_bert_tiny
    python -m soundlm.bench.semantic --hf_dir=/models/w2v-bert-2.0 --layer=17

On the built-in speech corpus (Harvard sentences read by several synthetic
voices) every clip is tokenized, and the token-bigram overlap (Jaccard index
of the sets of consecutive token pairs) is averaged over two kinds of pairs:
two voices saying the same sentences, and one voice saying different ones.
Tokens that follow content give a higher first figure than second.

Without `--hf_dir` the w2v-BERT model of `--size` is pre-trained for `--steps`
on the corpus's training split (unless `--workdir` already holds a
checkpoint), then k-means is fitted on its training-split embeddings. Clips
are cut to a multiple of 0.5 s before tokenizing so that few shapes compile.
"""
import argparse
import itertools
import logging
import time

import jax
import numpy as np
import optax

from soundlm import partitioning
from soundlm.bench import common
from soundlm.semantic.api import SemanticEmbedder, SemanticTokenizer
from soundlm.semantic.config import read_config, read_token_config
from soundlm.semantic.data import SpeechCrops
from soundlm.semantic.fit_kmeans import collect_embeddings
from soundlm.semantic.kmeans import fit_kmeans
from soundlm.semantic.task import W2vBertPretrainTask
from soundlm.trainer import Trainer

SIZES = {"tiny": dict(steps=3000, batch=8, crop_seconds=2.0, learning_rate=2e-3),
         "paper": dict(steps=20_000, batch=32, crop_seconds=4.0, learning_rate=5e-4)}
BUCKET = 8000  # samples: clips are cut to a multiple of 0.5 s


def bigrams(tokens) -> set:
  return set(zip(tokens[:-1].tolist(), tokens[1:].tolist()))


def overlap(a, b) -> float:
  """Jaccard index of the token-bigram sets of two sequences."""
  x, y = bigrams(a), bigrams(b)
  return len(x & y) / max(len(x | y), 1)


def pair_overlaps(clips, tokens) -> dict:
  same_text, same_voice = [], []
  for i, j in itertools.combinations(range(len(clips)), 2):
    a, b = clips[i], clips[j]
    if a.text == b.text and a.speaker != b.speaker:
      same_text.append(overlap(tokens[i], tokens[j]))
    elif a.speaker == b.speaker and a.text != b.text:
      same_voice.append(overlap(tokens[i], tokens[j]))
  if not same_text or not same_voice:
    raise ValueError("the corpus needs sentences read by two voices and voices reading "
                     "two sentences")
  return {"same_sentence_two_voices": float(np.mean(same_text)),
          "one_voice_two_sentences": float(np.mean(same_voice)),
          "same_sentence_pairs": len(same_text), "same_voice_pairs": len(same_voice)}


def pretrain(size: str, workdir: str, steps: int, seed: int) -> dict:
  """Pre-trains (or resumes) w2v-BERT of `size` in `workdir`; returns its last metrics."""
  settings = SIZES[size]
  config_file = read_config(size)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      optax.warmup_cosine_decay_schedule(0.0, settings["learning_rate"], steps // 10 + 1,
                                         steps, settings["learning_rate"] / 10)))
  task = W2vBertPretrainTask(config_file, num_negatives=20 if size == "tiny" else 100,
                             gumbel_decay=0.995 if size == "tiny" else 0.9999,
                             optimizer=optimizer)
  data = SpeechCrops(settings["batch"], settings["crop_seconds"], seed=seed)
  trainer = Trainer(task, data, workdir, num_steps=steps, log_every=max(steps // 10, 1),
                    checkpoint_every=steps, seed=seed, mesh=partitioning.make_mesh())
  return trainer.run()


def tokenize_clips(tokenizer: SemanticTokenizer, clips) -> list[np.ndarray]:
  out = []
  for clip in clips:
    usable = clip.waveform.size // BUCKET * BUCKET
    if usable == 0:
      raise ValueError(f"{clip.path}: shorter than {BUCKET / 16000} s")
    out.append(np.asarray(tokenizer.tokenize(clip.waveform[None, :usable]))[0])
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--steps", type=int, default=None, help="pre-training steps")
  parser.add_argument("--workdir", default=None,
                      help="pre-training work dir (reused if it holds a checkpoint)")
  parser.add_argument("--hf_dir", default=None, help="evaluate an imported w2v-BERT 2.0")
  parser.add_argument("--layer", type=int, default=None,
                      help="hidden-state index (default: the size's TokenConfig.layer)")
  parser.add_argument("--num_clusters", type=int, default=None)
  parser.add_argument("--kmeans_iters", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="semantic_bench.json")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from soundlm.io import corpus

  start = time.time()
  tokens_config = read_token_config(args.size)
  num_clusters = args.num_clusters or tokens_config.num_clusters
  train_metrics = {}
  if args.hf_dir:
    if args.layer is None:
      parser.error("--layer is required with --hf_dir")
    embedder = SemanticEmbedder.from_hf(args.hf_dir, args.layer)
    model = f"w2v-BERT 2.0 import ({args.hf_dir})"
    steps = 0
  else:
    import tempfile
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"w2v_bert_{args.size}_")
    steps = args.steps or SIZES[args.size]["steps"]
    train_metrics = pretrain(args.size, workdir, steps, args.seed)
    layer = tokens_config.layer if args.layer is None else args.layer
    embedder = SemanticEmbedder.load(workdir, layer)
    model = f"soundlm w2v-BERT {args.size}, {steps} pre-training steps ({workdir})"
  train_clips = corpus.load_builtin("train", "speech")
  embeddings, _ = collect_embeddings(embedder, [c.waveform for c in train_clips], 2.0)
  kmeans, inertia = fit_kmeans(embeddings, num_clusters, num_iters=args.kmeans_iters,
                               seed=args.seed, layer=embedder.layer,
                               model=embedder.fingerprint())
  tokenizer = SemanticTokenizer(embedder, kmeans)
  clips = train_clips + corpus.load_builtin("validation", "speech")
  tokens = tokenize_clips(tokenizer, clips)
  result = pair_overlaps(clips, tokens)
  used = np.bincount(np.concatenate(tokens), minlength=num_clusters)
  report = {
      "benchmark": "semantic", "model": model, "size": args.size, "layer": embedder.layer,
      "num_clusters": num_clusters, "pretrain_steps": steps,
      "pretrain_final_metrics": train_metrics, "kmeans_inertia": [inertia[0], inertia[-1]],
      "clusters_used": int((used > 0).sum()), "clips": len(clips), **result,
      "ratio": result["same_sentence_two_voices"] / max(result["one_voice_two_sentences"],
                                                         1e-9),
      "seconds": time.time() - start, "environment": common.environment()}
  print(common.markdown_table(
      ["pairs", "count", "token-bigram overlap"],
      [["same sentence, two voices", result["same_sentence_pairs"],
        f"{result['same_sentence_two_voices']:.4f}"],
       ["one voice, two sentences", result["same_voice_pairs"],
        f"{result['one_voice_two_sentences']:.4f}"]]))
  print(f"ratio {report['ratio']:.2f}  ({model}; layer {embedder.layer}, K={num_clusters}, "
        f"{report['clusters_used']} clusters used; {report['seconds']:.0f} s on "
        f"{jax.devices()[0].device_kind})")
  common.write_json(args.out, report)
  return report


if __name__ == "__main__":
  main()
