"""Do semantic tokens follow what is said more than who says it?

    python -m soundlm.bench.semantic --size tiny              # pre-trains on CPU first
    python -m soundlm.bench.semantic --size tiny --workdir=/tmp/w2v_bert_tiny
    python -m soundlm.bench.semantic --hf_dir=/models/w2v-bert-2.0 --layer=17

Two ABX discrimination scores (chance 0.5; `soundlm.evaluation.abx`: content
and speaker) on the built-in corpus's held-out validation clips (Harvard
sentences, each voice once), which neither the pre-training nor k-means saw.
k-means is fitted on the training split once per `--seeds` seed and
the scores are given as mean and spread over seeds.

Without `--hf_dir` the w2v-BERT model of `--size` is pre-trained for `--steps`
on the corpus's training split (unless `--workdir` already holds a
checkpoint). Clips are cut to a multiple of 0.5 s before tokenizing so that
few shapes compile.
"""
import argparse
import logging
import time

import jax
import numpy as np
import optax

from soundlm import partitioning
from soundlm.bench import common
from soundlm.evaluation.abx import (abx_scores, content_triplets, speaker_triplets,
                                    tokenize_clips)
from soundlm.semantic.api import SemanticEmbedder, SemanticTokenizer
from soundlm.semantic.config import read_config, read_token_config
from soundlm.semantic.data import SpeechCrops
from soundlm.semantic.fit_kmeans import collect_embeddings
from soundlm.semantic.kmeans import fit_kmeans
from soundlm.semantic.task import W2vBertPretrainTask
from soundlm.trainer import Trainer

SIZES = {"tiny": dict(steps=3000, batch=8, crop_seconds=2.0, learning_rate=2e-3),
         "paper": dict(steps=20_000, batch=32, crop_seconds=4.0, learning_rate=5e-4)}


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
  metrics = trainer.run()
  if trainer.preempted:  # the figures would be those of a shorter run
    raise SystemExit(f"pre-training stopped by a signal before step {steps}; rerun with "
                     f"--workdir={workdir} to resume it")
  return metrics


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--steps", type=int, default=None, help="pre-training steps")
  parser.add_argument("--workdir", default=None,
                      help="pre-training work dir (reused if it holds a checkpoint)")
  parser.add_argument("--hf_dir", default=None,
                      help="evaluate an imported HuBERT or w2v-BERT 2.0 folder")
  parser.add_argument("--layer", type=int, default=None,
                      help="hidden-state index (default: the size's TokenConfig.layer)")
  parser.add_argument("--num_clusters", type=int, default=None)
  parser.add_argument("--kmeans_iters", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0, help="pre-training seed")
  parser.add_argument("--seeds", type=int, default=3, help="k-means fits (seeds 0, 1, ...)")
  parser.add_argument("--out", default="semantic_bench.json")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f"--seeds must be >= 1, got {args.seeds}")
  if args.steps is not None and args.steps < 2:
    parser.error(f"--steps must be >= 2 (a warm-up step, then the decay), got {args.steps}")
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
    model = f"{type(embedder.config).__name__} import ({args.hf_dir})"
    steps = 0
  else:
    import tempfile
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"w2v_bert_{args.size}_")
    steps = args.steps or SIZES[args.size]["steps"]
    train_metrics = pretrain(args.size, workdir, steps, args.seed)
    layer = tokens_config.layer if args.layer is None else args.layer
    embedder = SemanticEmbedder.load(workdir, layer)
    model = f"soundlm w2v-BERT {args.size}, {steps} pre-training steps ({workdir})"
  embeddings, _ = collect_embeddings(
      embedder, [c.waveform for c in corpus.load_builtin("train", "speech")], 2.0)
  clips = corpus.load_builtin("validation", "speech")
  per_seed = []
  for seed in range(args.seeds):
    kmeans, _ = fit_kmeans(embeddings, num_clusters, num_iters=args.kmeans_iters, seed=seed,
                           layer=embedder.layer, model=embedder.fingerprint())
    tokens = tokenize_clips(SemanticTokenizer(embedder, kmeans), clips)
    used = np.unique(np.concatenate(tokens)).size
    per_seed.append({"seed": seed, "clusters_used": int(used),
                     **abx_scores(clips, tokens, kmeans.centroids)})
    logging.info("k-means seed %d: %s", seed, per_seed[-1])
  summary = {key: {"mean": float(np.mean([r[key] for r in per_seed])),
                   "std": float(np.std([r[key] for r in per_seed]))}
             for key in ("content_abx", "speaker_abx", "clusters_used")}
  report = {
      "benchmark": "semantic", "model": model, "size": args.size, "layer": embedder.layer,
      "num_clusters": num_clusters, "pretrain_steps": steps,
      "pretrain_final_metrics": train_metrics, "clips": len(clips),
      "content_triplets": len(content_triplets(clips)),
      "speaker_triplets": len(speaker_triplets([c.speaker for c in clips])),
      "seeds": per_seed, **summary,
      "seconds": time.time() - start, "environment": common.environment()}
  print(common.markdown_table(
      ["ABX (chance 0.5)", "triplets", f"mean over {args.seeds} k-means seeds", "std"],
      [["content: same sentence, other voices", report["content_triplets"],
        f"{summary['content_abx']['mean']:.3f}", f"{summary['content_abx']['std']:.3f}"],
       ["speaker: same voice, other words", report["speaker_triplets"],
        f"{summary['speaker_abx']['mean']:.3f}", f"{summary['speaker_abx']['std']:.3f}"]]))
  print(f"({model}; layer {embedder.layer}, K={num_clusters}, "
        f"{summary['clusters_used']['mean']:.0f} clusters used; {report['seconds']:.0f} s on "
        f"{jax.devices()[0].device_kind})")
  common.write_json(args.out, report)
  return report


if __name__ == "__main__":
  main()
