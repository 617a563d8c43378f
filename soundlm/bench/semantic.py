"""Do semantic tokens follow what is said more than who says it?

    python -m soundlm.bench.semantic --size tiny              # pre-trains on CPU first
    python -m soundlm.bench.semantic --size tiny --workdir=/tmp/w2v_bert_tiny
    python -m soundlm.bench.semantic --hf_dir=/models/w2v-bert-2.0 --layer=17

Two ABX discrimination scores (chance 0.5) on the built-in corpus's held-out
validation clips (Harvard sentences, each voice once), which neither the
pre-training nor k-means saw. The distance of two token sequences is the
mean cost along their dynamic-time-warping path, a step costing the distance
of the two tokens' centroids.

* content: A and X are the same sentence read by two voices, B another
  sentence by a third voice; correct when X is closer to A than to B.
* speaker: A and X are the two halves of one clip (one voice, different
  words), B a half of another voice's clip; correct when X is closer to A.

Tokens that follow content score high on the first and near 0.5 on the
second. k-means is fitted on the training split once per `--seeds` seed and
the scores are given as mean and spread over seeds.

Without `--hf_dir` the w2v-BERT model of `--size` is pre-trained for `--steps`
on the corpus's training split (unless `--workdir` already holds a
checkpoint). Clips are cut to a multiple of 0.5 s before tokenizing so that
few shapes compile.
"""
import argparse
import functools
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
