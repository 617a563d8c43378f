"""The semantic suite: content and speaker ABX (`abx`) of a semantic tokenizer
on held-out clips (by default the built-in corpus's validation speech).

A tokenizer is named as the tokenization job names it: 'WORKDIR,KMEANS' (a
w2v-BERT training work dir and its k-means file), 'hf:DIR,KMEANS' (an
imported Hugging Face HuBERT or w2v-BERT 2.0 folder), or 'hf:DIR' with a
layer, whose k-means is then fitted here on the built-in training speech.
"""
import numpy as np

from soundlm.evaluation import abx
from soundlm.evaluation import workdirs


def fit_builtin_kmeans(embedder, num_clusters: int, *, seed: int = 0, num_iters: int = 30):
  """k-means of `embedder`'s embeddings of the built-in training speech (2 s
  windows), which no held-out clip is part of."""
  from soundlm.io import corpus
  from soundlm.semantic.fit_kmeans import collect_embeddings
  from soundlm.semantic.kmeans import fit_kmeans

  embeddings, _ = collect_embeddings(
      embedder, [c.waveform for c in corpus.load_builtin("train", "speech")], 2.0)
  kmeans, _ = fit_kmeans(embeddings, num_clusters, num_iters=num_iters, seed=seed,
                         layer=embedder.layer, model=embedder.fingerprint())
  return kmeans


def load_tokenizer(spec: str, *, layer: int | None = None, num_clusters: int = 1024,
                   kmeans_iters: int = 30, seed: int = 0, flag: str = "--semantic"):
  """The SemanticTokenizer that `spec` names (see the module docstring)."""
  from soundlm.semantic.api import SemanticEmbedder, SemanticTokenizer

  model, _, kmeans = spec.partition(",")
  if model.startswith("hf:"):
    if kmeans:
      return SemanticTokenizer.from_hf(model[3:], workdirs.check_file(kmeans, flag, "k-means file"),
                                       layer)
    if layer is None:
      raise ValueError(f"{flag}={spec}: an imported model without a k-means file needs a "
                       "layer (--semantic_layer) to fit one on")
    embedder = SemanticEmbedder.from_hf(model[3:], layer)
    return SemanticTokenizer(embedder, fit_builtin_kmeans(
        embedder, num_clusters, seed=seed, num_iters=kmeans_iters))
  workdirs.check(model, "w2v_bert", flag)
  if not kmeans:
    raise ValueError(f"{flag}={spec}: a w2v-BERT work dir needs its k-means file "
                     f"(WORKDIR,KMEANS, as written by python -m soundlm.semantic.fit_kmeans)")
  return SemanticTokenizer.load(model, workdirs.check_file(kmeans, flag, "k-means file"), layer)


def evaluate_semantic(tokenizer, clips) -> dict:
  """Content and speaker ABX of `tokenizer` on `clips` (16 kHz; each with id,
  waveform, speaker and text)."""
  tokens = abx.tokenize_clips(tokenizer, clips)
  return {"suite": "semantic",
          "tokenizer": {"source": tokenizer.embedder.source, "layer": tokenizer.embedder.layer,
                        "num_clusters": tokenizer.vocab_size},
          "clips": [c.id for c in clips],
          "clusters_used": int(np.unique(np.concatenate(tokens)).size),
          "content_triplets": len(abx.content_triplets(clips)),
          "speaker_triplets": len(abx.speaker_triplets([c.speaker for c in clips])),
          **abx.abx_scores(clips, tokens, tokenizer.kmeans.centroids)}
