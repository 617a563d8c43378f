"""`SemanticTokenizer`: 16 kHz waveforms -> 25 Hz semantic token ids.

tokens = k-means id of the (per-dimension normalised) embedding of one
w2v-BERT hidden state. For a clip of N samples there are exactly
T25 = N // 640 tokens; token t describes samples [640 t, 640 t + 640), and
the last N % 640 samples (under 40 ms) produce no token. Models whose
Conformer stack runs at 50 Hz (w2v-BERT 2.0) have each pair of frames
averaged into one 25 Hz embedding before clustering.

A k-means file records the fingerprint of the model and layer it was fitted
on (`SemanticEmbedder.fingerprint`); a tokenizer refuses centroids fitted on
other parameters, and warns for older files that record none.
"""
import functools
import hashlib
import os
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.io import audio
from soundlm import models
from soundlm import partitioning
from soundlm.semantic import features as features_lib
from soundlm.semantic.config import W2vBertConfig, read_config, read_token_config
from soundlm.semantic.encoder import W2vBertEncoder, input_features
from soundlm.semantic.hf_import import load_hf_w2v_bert
from soundlm.semantic.kmeans import KMeans


class SemanticEmbedder:
  """A w2v-BERT encoder and the hidden-state index `layer` (0 = front-end output,
  i = output of Conformer block i) whose 25 Hz embeddings are clustered."""

  def __init__(self, config: W2vBertConfig, encoder_params, layer: int,
               source: str | None = None, step: int | None = None,
               partitioner: partitioning.Partitioner | None = None):
    if not 0 <= layer <= config.num_layers:
      raise ValueError(f"layer: expected a hidden-state index in 0..{config.num_layers}, "
                       f"got {layer}")
    # The encoder is replicated over the mesh; batches are split over its data axes.
    self.partitioner = partitioner or partitioning.Partitioner()
    self.config, self.layer = config, layer
    self.params = self.partitioner.replicate(encoder_params)
    self.source, self.step = source, step  # where the parameters came from, for fingerprints
    self._encoder = W2vBertEncoder(config)
    self._embed = jax.jit(self.embed_fn)

  def embed_fn(self, params, wav):
    """Pure function: (encoder params, [B, N] waveform) -> [B, N // 640, width]."""
    hidden, _ = self._encoder.apply({"params": params}, input_features(wav, self.config),
                                    num_layers=self.layer)
    x = hidden[self.layer]
    if self.config.model_frame_rate == 50:
      x = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2]).mean(axis=2)
    return x

  def embed(self, wav, sample_rate: int | None = None) -> jax.Array:
    """float32 [B, N] waveform -> float32 [B, N // 640, width] embeddings of `layer`."""
    features_lib.check_waveform(wav, sample_rate)
    wav, valid = self.partitioner.place_batch(jnp.asarray(wav, jnp.float32))
    return self._embed(self.params, wav)[valid]

  def fingerprint(self) -> dict:
    """What k-means files record of the model they were fitted on: the source
    (work dir, Hugging Face folder or random size), checkpoint step, layer, and
    a digest of the parameters that layer depends on."""
    return {"source": self.source, "step": self.step, "layer": self.layer,
            "params": params_digest(self.params, self.layer)}

  @classmethod
  def of(cls, model: models.Model, layer: int) -> "SemanticEmbedder":
    """The embedder of a w2v-BERT encoder built by `soundlm.models`."""
    return cls(model.config, model.variables["params"], layer, model.source, model.step,
               model.partitioner)

  @classmethod
  def random(cls, config: str = "tiny", seed: int = 0, layer: int | None = None, *,
             mesh=None):
    """Randomly initialised encoder of a named size or gin file."""
    model = models.random(read_config(config), seed, mesh=mesh, rules=_REPLICATED)
    embedder = cls.of(model, read_token_config(config).layer if layer is None else layer)
    embedder.source = f"random:{config}:seed={seed}"
    return embedder

  @classmethod
  def load(cls, w2v_bert_workdir, layer: int, step: int | None = None, *, mesh=None):
    """From a pre-training run's work dir: latest (or `step`) checkpoint."""
    return cls.of(models.load(str(w2v_bert_workdir), step, family="w2v_bert", mesh=mesh,
                              rules=_REPLICATED), layer)

  @classmethod
  def from_hf(cls, hf_dir, layer: int, *, mesh=None):
    """From a local Hugging Face w2v-BERT 2.0 folder (config.json, model.safetensors)."""
    config, params = load_hf_w2v_bert(hf_dir)
    return cls(config, params, layer, source=f"hf:{os.path.abspath(os.fspath(hf_dir))}",
               partitioner=partitioning.Partitioner.of(mesh, _REPLICATED))


class SemanticTokenizer:
  """Embeddings of one w2v-BERT layer, assigned to k-means centroids."""
  sample_rate = features_lib.SAMPLE_RATE
  frame_rate = 25

  def __init__(self, embedder: SemanticEmbedder, kmeans: KMeans):
    config, layer = embedder.config, embedder.layer
    if kmeans.dim != config.width:
      raise ValueError(f"k-means centroids have dimension {kmeans.dim} but layer {layer} of "
                       f"this w2v-BERT model has width {config.width}")
    if kmeans.layer is not None and kmeans.layer != layer:
      raise ValueError(f"the k-means centroids were fitted on layer {kmeans.layer}, not on "
                       f"the requested layer {layer}")
    _check_fitted_on(kmeans, embedder)
    self.embedder, self.kmeans = embedder, kmeans
    self.config, self.layer = config, layer
    self._tokenize = jax.jit(self.tokenize_fn)

  @property
  def params(self):
    return self.embedder.params

  @property
  def vocab_size(self) -> int:
    return self.kmeans.num_clusters

  # --- construction ------------------------------------------------------

  @classmethod
  def random(cls, config: str = "tiny", seed: int = 0, *, mesh=None) -> "SemanticTokenizer":
    """Randomly initialised w2v-BERT of a named size or gin file, with random
    centroids (standard normal in the normalised space, normalisation taken
    from the embeddings of a fixed test signal)."""
    embedder = SemanticEmbedder.random(config, seed, mesh=mesh)
    width = embedder.config.width
    flat = np.asarray(embedder.embed(_test_signal())).reshape(-1, width)
    centroids = np.random.default_rng(seed).standard_normal(
        (read_token_config(config).num_clusters, width))
    kmeans = KMeans(centroids.astype(np.float32), flat.mean(0),
                    np.maximum(flat.std(0), 1e-6), embedder.layer, embedder.fingerprint())
    return cls(embedder, kmeans)

  @classmethod
  def load(cls, w2v_bert_workdir, kmeans_path, layer: int | None = None,
           step: int | None = None, *, mesh=None) -> "SemanticTokenizer":
    """From a pre-training run's work dir (latest, or `step`, checkpoint) and a
    k-means file; `layer` defaults to the one k-means used."""
    kmeans = KMeans.load(kmeans_path)
    return cls(SemanticEmbedder.load(w2v_bert_workdir, _layer(layer, kmeans), step,
                                     mesh=mesh), kmeans)

  @classmethod
  def from_hf(cls, hf_dir, kmeans_path, layer: int | None = None, *,
              mesh=None) -> "SemanticTokenizer":
    """From a local Hugging Face w2v-BERT 2.0 folder (config.json and
    model.safetensors) and a k-means file fitted on its embeddings."""
    kmeans = KMeans.load(kmeans_path)
    return cls(SemanticEmbedder.from_hf(hf_dir, _layer(layer, kmeans), mesh=mesh), kmeans)

  # --- use ---------------------------------------------------------------

  def tokenize_fn(self, params, wav):
    """Pure function: (encoder params, [B, N] waveform) -> int32 [B, N // 640]."""
    return self.kmeans.assign(self.embedder.embed_fn(params, wav))

  def tokenize(self, wav, sample_rate: int | None = None) -> jax.Array:
    """float32 [B, N] waveform in [-1, 1] at 16 kHz -> int32 [B, N // 640] tokens.

    `sample_rate`, when given, must be 16000. Raises ValueError for
    multi-channel audio, non-float samples, or clips shorter than 640 samples.
    """
    features_lib.check_waveform(wav, sample_rate)
    wav, valid = self.embedder.partitioner.place_batch(jnp.asarray(wav, jnp.float32))
    return self._tokenize(self.params, wav)[valid]

  def tokenize_file(self, path) -> np.ndarray:
    """int32 [N // 640] tokens of a mono 16 kHz audio file (other rates and
    channel counts are refused)."""
    wav, _ = audio.read_audio(path, self.sample_rate)
    return np.asarray(self.tokenize(wav[None]))[0]


def run_config(workdir) -> pathlib.Path:
  """The config.gin of a training work dir, or an error saying what is missing."""
  workdir = pathlib.Path(os.fspath(workdir))
  if not workdir.is_dir():
    raise FileNotFoundError(f"work dir {workdir} does not exist (expected the work dir of a "
                            "w2v-BERT pre-training run)")
  path = workdir / "config.gin"
  if not path.is_file():
    raise FileNotFoundError(f"{workdir}: no config.gin in this work dir (soundlm.train writes "
                            "it when a run starts); expected the work dir of a w2v-BERT "
                            "pre-training run")
  return path


def params_digest(params, layer: int) -> str:
  """A cheap digest of the parameters that hidden state `layer` depends on (all
  but the masking embedding and blocks `layer` and above): every tensor's name
  and shape and a strided sample of at most 4096 of its values."""
  digest = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in leaves:
    top = str(getattr(path[0], "key", path[0]))
    if top == "mask_embedding" or (top.startswith("layers_") and int(top[7:]) >= layer):
      continue
    # Sampled where the tensor lives: only the sample is copied to the host.
    flat = leaf.reshape(-1)
    sample = np.asarray(flat[::max(1, flat.size // 4096)]).astype(np.float32)
    digest.update(f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)};".encode())
    digest.update(sample.tobytes())
  return digest.hexdigest()[:16]


def _describe(fingerprint: dict) -> str:
  step = "" if fingerprint.get("step") is None else f" step {fingerprint['step']}"
  return (f"layer {fingerprint.get('layer')} of {fingerprint.get('source')}{step} "
          f"(parameter digest {fingerprint.get('params')})")


def _check_fitted_on(kmeans: KMeans, embedder: SemanticEmbedder):
  """Refuses centroids fitted on another model or layer; warns when the file is
  too old to say."""
  where = f"k-means file {kmeans.path}" if kmeans.path else "the k-means centroids"
  if kmeans.model is None:
    warnings.warn(f"{where} records no fingerprint of the model it was fitted on (an older "
                  "file, or fit_kmeans without model=); it is used unchecked with "
                  f"{_describe(embedder.fingerprint())}", stacklevel=4)
    return
  mine = embedder.fingerprint()
  if kmeans.model.get("params") != mine["params"] or kmeans.model.get("layer") != mine["layer"]:
    raise ValueError(f"{where} was fitted on {_describe(kmeans.model)}, not on this model: "
                     f"{_describe(mine)}; fit k-means on this model's embeddings "
                     "(python -m soundlm.semantic.fit_kmeans)")


def _layer(layer, kmeans):
  if layer is None:
    if kmeans.layer is None:
      raise ValueError("layer: the k-means file does not record its layer; pass layer=")
    return kmeans.layer
  return layer


# Every encoder parameter replicated; batches split over the data axes.
_REPLICATED = partitioning.DATA_PARALLEL_RULES


@functools.lru_cache(maxsize=1)
def _test_signal() -> np.ndarray:
  """Two seconds of gliding harmonic tones and noise, [2, 32000]."""
  t = np.arange(32_000) / features_lib.SAMPLE_RATE
  rng = np.random.default_rng(0)
  rows = [0.2 * np.sin(2 * np.pi * (f0 + 80 * t) * t) + 0.02 * rng.standard_normal(t.size)
          for f0 in (110.0, 220.0)]
  return np.stack(rows).astype(np.float32)

