"""Hyperparameters of a w2v-BERT model, bound in gin and readable without gin's
global state.

Model gin files (`gin/semantic/*.gin`) bind `W2vBertConfig.<field> = <literal>`
and `TokenConfig.<field> = <literal>`. `read_config` parses such a file (or a
training run's saved config.gin) on its own, so a tokenizer built from one
never disturbs the gin configuration of the program around it.
"""
import dataclasses
from typing import ClassVar
import pathlib

import gin

from soundlm import gin_utils
from soundlm.semantic import features as features_lib

FRONTENDS = ("conv", "stacked")
BLOCKS = ("conformer", "w2v_bert_2")
POSITIONS = ("rope", "relative_key", "rotary", "none")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class W2vBertConfig:
  """One w2v-BERT model.

  frontend: 'conv' is the w2v-BERT paper's (log-mel, two stride-2 2-D
    convolutions: 25 Hz); 'stacked' is w2v-BERT 2.0's (pairs of 100 Hz fbank
    frames stacked into 160-dim vectors, LayerNorm, linear: 50 Hz).
  block: 'conformer' is `soundlm.layers.conformer.ConformerBlock`;
    'w2v_bert_2' reproduces the Hugging Face `Wav2Vec2BertEncoderLayer`
    exactly (biases, causal depthwise convolution, Shaw relative keys).
  """
  FAMILY: ClassVar[str] = "w2v_bert"
  frontend: str = "conv"
  num_mel_bins: int = 80
  conv_channels: int = 128
  width: int = 1024
  num_heads: int = 16
  mlp_dim: int = 4096
  conv_kernel_size: int = 31
  num_contrastive_layers: int = 12
  num_mlm_layers: int = 12
  block: str = "conformer"
  position: str = "rope"
  left_max_position: int = 64
  right_max_position: int = 8
  rotary_base: float = 10_000.0
  layer_norm_eps: float = 1e-5
  dropout_rate: float = 0.1
  codebook_size: int = 1024
  codebook_dim: int = 1024
  contrastive_dim: int = 768

  def __post_init__(self):
    _one_of("frontend", self.frontend, FRONTENDS)
    _one_of("block", self.block, BLOCKS)
    _one_of("position", self.position, POSITIONS)
    if self.block == "conformer" and self.position not in ("rope", "none"):
      raise ValueError(f"position: the 'conformer' block supports 'rope' or 'none', "
                       f"got {self.position!r}")
    if self.block == "w2v_bert_2" and self.position == "rope":
      raise ValueError("position: the 'w2v_bert_2' block uses 'relative_key', 'rotary' "
                       "or 'none', got 'rope'")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    for name in ("width", "num_heads", "mlp_dim", "conv_kernel_size", "codebook_size",
                 "codebook_dim", "contrastive_dim", "num_mel_bins", "conv_channels"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_contrastive_layers < 0 or self.num_mlm_layers < 0:
      raise ValueError("num_contrastive_layers and num_mlm_layers must be >= 0")

  @property
  def num_layers(self) -> int:
    return self.num_contrastive_layers + self.num_mlm_layers

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def model_frame_rate(self) -> int:
    """Frames per second of the Conformer stack (tokens are always 25 Hz)."""
    return 25 if self.frontend == "conv" else 50

  @property
  def samples_per_token(self) -> int:
    """16 kHz samples per semantic token (640: 25 Hz)."""
    return features_lib.SAMPLES_PER_TOKEN


def _one_of(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def config_path(config) -> pathlib.Path:
  """'tiny' / 'paper' name gin/semantic/<name>.gin; anything else is a path."""
  config = str(config)
  named = "/" not in config and not config.endswith(".gin")
  try:
    return gin_utils.find(f"gin/semantic/{config}.gin" if named else config)
  except FileNotFoundError as error:
    raise FileNotFoundError(f"config {config!r}: no gin file (give 'tiny', 'paper' or a "
                            f"path): {error}") from error


def _from_bindings(cls, config):
  values = gin_utils.read_literals(config_path(config), cls.__name__)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"{config}: {cls.__name__} has no field(s) {unknown}")
  return cls(**values)


def read_config(config) -> W2vBertConfig:
  """W2vBertConfig from 'tiny', 'paper', a model gin file or a run's config.gin."""
  return _from_bindings(W2vBertConfig, config)


def read_token_config(config) -> "TokenConfig":
  return _from_bindings(TokenConfig, config)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TokenConfig:
  """Semantic-token settings that go with a model size: the number of k-means
  clusters and the hidden-state index whose embeddings are clustered."""
  num_clusters: int = 1024
  layer: int = 19
