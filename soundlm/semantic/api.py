"""`SemanticTokenizer`: 16 kHz waveforms -> semantic token ids.

tokens = k-means id of the (per-dimension normalised) embedding of one hidden
state of a w2v-BERT or HuBERT model. The model sets the hop H, samples per
token: 640 for w2v-BERT (25 Hz), 320 for HuBERT (50 Hz). For a clip of N
samples there are exactly N // H tokens; token t describes samples
[H t, H t + H), and the last N % H samples produce no token. w2v-BERT models
whose Conformer stack runs at 50 Hz (w2v-BERT 2.0) have each pair of frames
averaged into one 25 Hz embedding before clustering.

Clips of different lengths share a batch zero-padded to its longest, with
`lengths` giving each clip's samples: features, normalisation, attention and
convolutions then ignore the padding, so a clip gets the tokens it gets alone
(up to float rounding), and its frames past `lengths // H` are padding
(embeddings zero, tokens PAD_TOKEN).

A k-means file records the fingerprint of the model and layer it was fitted
on (`SemanticEmbedder.fingerprint`); a tokenizer refuses centroids fitted on
other parameters or another model config, and warns for older files that
record no fingerprint, or no config digest (those still have their
parameters and layer checked).
"""
import functools
import hashlib
import json
import os
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.io import audio
from soundlm import configs
from soundlm import models
from soundlm import partitioning
from soundlm.semantic import features as features_lib
from soundlm.semantic.config import W2vBertConfig, read_config, read_token_config
from soundlm.semantic.encoder import W2vBertEncoder, input_features, padding_mask
from soundlm.semantic.hf_hubert import load_hf_hubert
from soundlm.semantic.hf_import import load_hf_w2v_bert
from soundlm.semantic.hubert import HubertConfig, HubertEncoder, token_hidden_state
from soundlm.semantic.kmeans import KMeans

PAD_TOKEN = -1  # token id of frames past a clip's length in a padded batch


class SemanticEmbedder:
  """A w2v-BERT or HuBERT encoder and the hidden-state index `layer` (0 = the
  first block's input, i = output of block i) whose embeddings, one per token,
  are clustered."""

  def __init__(self, config: W2vBertConfig | HubertConfig, encoder_params, layer: int,
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
    self.samples_per_token = config.samples_per_token
    if isinstance(config, HubertConfig):
      self._encoder = HubertEncoder(config)
    else:
      self._encoder = W2vBertEncoder(config)
    self._embed = jax.jit(self.embed_fn)

  @property
  def frame_rate(self) -> float:
    """Tokens per second: 25 for w2v-BERT, 50 for HuBERT."""
    return features_lib.SAMPLE_RATE / self.samples_per_token

  def embed_fn(self, params, wav, lengths=None):
    """Pure function: (encoder params, [B, N] waveform, optional int [B] clip
    lengths in samples) -> [B, N // H, width], zero past each clip's tokens."""
    if isinstance(self.config, HubertConfig):
      x = token_hidden_state(self._encoder, params, wav, lengths, self.layer)
    else:
      x = self._w2v_bert_hidden_state(params, wav, lengths)
    if lengths is None:
      return x
    return jnp.where(token_mask(lengths, x.shape[1], self.samples_per_token)[..., None], x, 0)

  def _w2v_bert_hidden_state(self, params, wav, lengths):
    features = input_features(wav, self.config, lengths)
    mask = None if lengths is None else padding_mask(lengths, wav.shape[1], self.config)
    hidden, _ = self._encoder.apply({"params": params}, features, padding_mask=mask,
                                    num_layers=self.layer)
    x = hidden[self.layer]
    if self.config.model_frame_rate == 50:
      x = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2]).mean(axis=2)
    return x

  def embed(self, wav, sample_rate: int | None = None, lengths=None) -> jax.Array:
    """float32 [B, N] waveform -> float32 [B, N // H, width] embeddings of `layer`.
    `lengths` (int [B] samples, H..N) marks the clips of a zero-padded batch."""
    arguments, valid = self.place(wav, sample_rate, lengths)
    return self._embed(*arguments)[valid]

  def place(self, wav, sample_rate: int | None = None, lengths=None):
    """Checks a batch and places it over the mesh: ((params, wav[, lengths]),
    the arguments of `embed_fn`, and the valid-row mask of its results)."""
    features_lib.check_waveform(wav, sample_rate, samples_per_token=self.samples_per_token)
    batch = [jnp.asarray(wav, jnp.float32)]
    if lengths is not None:
      batch.append(features_lib.check_lengths(lengths, wav, self.samples_per_token))
    batch, valid = self.partitioner.place_batch(tuple(batch))
    return (self.params, *batch), valid

  def fingerprint(self) -> dict:
    """What k-means files record of the model they were fitted on: the source
    (work dir, Hugging Face folder or random size), checkpoint step, layer, and
    digests of the parameters that layer depends on and of the model config."""
    return {"source": self.source, "step": self.step, "layer": self.layer,
            "params": params_digest(self.params, self.layer),
            "config": config_digest(self.config)}

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
    """From a local Hugging Face HuBERT or w2v-BERT 2.0 folder (config.json,
    model.safetensors), by the config's model_type."""
    config, params = load_hf(hf_dir)
    return cls(config, params, layer, source=f"hf:{os.path.abspath(os.fspath(hf_dir))}",
               partitioner=partitioning.Partitioner.of(mesh, _REPLICATED))


class SemanticTokenizer:
  """Embeddings of one w2v-BERT or HuBERT layer, assigned to k-means centroids."""
  sample_rate = features_lib.SAMPLE_RATE

  def __init__(self, embedder: SemanticEmbedder, kmeans: KMeans):
    config, layer = embedder.config, embedder.layer
    if kmeans.dim != config.width:
      raise ValueError(f"k-means centroids have dimension {kmeans.dim} but layer {layer} of "
                       f"this model has width {config.width}")
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

  @property
  def frame_rate(self) -> float:
    """Tokens per second (the model's): 25 for w2v-BERT, 50 for HuBERT."""
    return self.embedder.frame_rate

  @property
  def samples_per_token(self) -> int:
    return self.embedder.samples_per_token

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
    """From a local Hugging Face HuBERT or w2v-BERT 2.0 folder (config.json and
    model.safetensors) and a k-means file fitted on its embeddings."""
    kmeans = KMeans.load(kmeans_path)
    return cls(SemanticEmbedder.from_hf(hf_dir, _layer(layer, kmeans), mesh=mesh), kmeans)

  # --- use ---------------------------------------------------------------

  def tokenize_fn(self, params, wav, lengths=None):
    """Pure function: (encoder params, [B, N] waveform, optional int [B] clip
    lengths in samples) -> int32 [B, N // H], PAD_TOKEN past each clip's tokens."""
    tokens = self.kmeans.assign(self.embedder.embed_fn(params, wav, lengths))
    if lengths is None:
      return tokens
    return jnp.where(token_mask(lengths, tokens.shape[1], self.samples_per_token), tokens,
                     PAD_TOKEN)

  def tokenize(self, wav, sample_rate: int | None = None, lengths=None) -> jax.Array:
    """float32 [B, N] waveform in [-1, 1] at 16 kHz -> int32 [B, N // H] tokens
    (H = `samples_per_token`).

    `sample_rate`, when given, must be 16000. `lengths` (int [B] samples,
    H..N) gives each clip's length in a zero-padded batch. Raises ValueError
    for multi-channel audio, non-float samples, clips shorter than H samples
    or lengths outside H..N.
    """
    arguments, valid = self.embedder.place(wav, sample_rate, lengths)
    return self._tokenize(*arguments)[valid]

  def tokenize_file(self, path) -> np.ndarray:
    """int32 [N // H] tokens of a mono 16 kHz audio file (other rates and
    channel counts are refused)."""
    wav, _ = audio.read_audio(path, self.sample_rate)
    return np.asarray(self.tokenize(wav[None]))[0]


def token_mask(lengths, num_tokens: int,
               samples_per_token: int = features_lib.SAMPLES_PER_TOKEN) -> jax.Array:
  """bool [B, num_tokens]: True on each clip's whole tokens of `samples_per_token`."""
  return features_lib.frame_mask(jnp.asarray(lengths) // samples_per_token, num_tokens)


# Hugging Face model_type -> loader of (config, params).
_HF_LOADERS = {"hubert": load_hf_hubert, "wav2vec2-bert": load_hf_w2v_bert}


def load_hf(hf_dir):
  """(config, params) of a local Hugging Face semantic model folder: HuBERT or
  w2v-BERT 2.0, chosen by its config.json's model_type."""
  config_file = pathlib.Path(os.fspath(hf_dir)) / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{hf_dir}: no config.json (expected a Hugging Face HubertModel "
                            "or Wav2Vec2BertModel folder)")
  model_type = json.loads(config_file.read_text()).get("model_type")
  if model_type not in _HF_LOADERS:
    raise ValueError(f"{config_file}: model_type {model_type!r} is not a semantic model "
                     f"soundlm imports (expected one of {sorted(_HF_LOADERS)})")
  return _HF_LOADERS[model_type](hf_dir)


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


# W2vBertConfig fields that do not change what a hidden state computes at
# inference: pre-training heads, dropout, and the depth of the stack (blocks
# past the layer do not run; the parameter digest covers the blocks before it).
_NOT_IN_EMBEDDINGS = ("dropout_rate", "codebook_size", "codebook_dim", "contrastive_dim",
                      "num_contrastive_layers", "num_mlm_layers")


def config_digest(config: W2vBertConfig) -> str:
  """A digest of the config fields that shape the embeddings (position
  scheme and windows, epsilons, front end, sizes, ...)."""
  fields = {name: value for name, value in configs.to_dict(config).items()
            if name not in _NOT_IN_EMBEDDINGS}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _describe(fingerprint: dict) -> str:
  step = "" if fingerprint.get("step") is None else f" step {fingerprint['step']}"
  return (f"layer {fingerprint.get('layer')} of {fingerprint.get('source')}{step} "
          f"(parameter digest {fingerprint.get('params')}, config digest "
          f"{fingerprint.get('config')})")


def _check_fitted_on(kmeans: KMeans, embedder: SemanticEmbedder):
  """Refuses centroids fitted on another model, config or layer; warns when the
  file is too old to say (all of it, or the config)."""
  where = f"k-means file {kmeans.path}" if kmeans.path else "the k-means centroids"
  mine = embedder.fingerprint()
  if kmeans.model is None:
    warnings.warn(f"{where} records no fingerprint of the model it was fitted on (an older "
                  "file, or fit_kmeans without model=); it is used unchecked with "
                  f"{_describe(mine)}", stacklevel=4)
    return
  recorded = {"params": kmeans.model.get("params"), "layer": kmeans.model.get("layer"),
              "config": kmeans.model.get("config", mine["config"])}
  if any(recorded[name] != mine[name] for name in recorded):
    raise ValueError(f"{where} was fitted on {_describe(kmeans.model)}, not on this model: "
                     f"{_describe(mine)}; fit k-means on this model's embeddings "
                     "(python -m soundlm.semantic.fit_kmeans)")
  if "config" not in kmeans.model:
    warnings.warn(f"{where} records no config digest (a file from before configs were "
                  "recorded): its parameters and layer match, its model config is "
                  "unchecked", stacklevel=4)


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

