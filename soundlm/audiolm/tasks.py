"""Training task for one AudioLM stage (the shared trainer's contract).

Batches hold `tokens` [B, L]: model sequences from `layouts` (the data
pipeline's seqio tasks or `synthetic.MarkovStageData`). The model predicts
tokens[:, 1:] from tokens[:, :-1]; the loss covers only the stage's targets
(the ids after START; conditioning, START and PAD are not scored), and each
target's softmax runs over the ids valid at its position only (its RVQ
level, or the semantic ids), the same set the sampler draws from.

Given the codec its codes came from, an acoustic stage's evaluation is
audible (`AudioLMTask.eval_audio`).
"""
import gin
import jax
import jax.numpy as jnp

from soundlm import rng as rng_lib
from soundlm import trainer
from soundlm.layers.ids import check_ids
from soundlm.audiolm.decoding import Decoder, SamplingConfig, mask_invalid
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import DecoderLM, ModelConfig, StageConfig
from soundlm.codec.listening import ListeningCodec


def target_cross_entropy(logits, targets, layout: Layout):
  """Per-token cross-entropy [B, T], target weights [B, T] and the logits
  restricted to each position's valid ids [B, T, V].

  Positions that are not targets of the stage get weight 0.
  """
  weights = layout.target_mask(targets)
  level = jnp.where(weights, (targets - layout.target_base) // layout.target_width, 0)
  low = layout.target_base + level * layout.target_width
  logits = mask_invalid(logits, low[..., None], (low + layout.target_width)[..., None])
  labels = jnp.where(weights, targets, low)
  label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  cross_entropy = jax.nn.logsumexp(logits, axis=-1) - label_logits
  return jnp.where(weights, cross_entropy, 0.0), weights.astype(jnp.float32), logits


@gin.configurable(module="soundlm.audiolm")
class AudioLMTask:
  """Next-token prediction for the stage of `layout`; one parameter group, 'model'.

  `codec` (coarse and fine stages), the codec the codes came from (gin:
  `@soundlm.codec.listening_codec()`), makes the trainer's evaluation
  audible: see `eval_audio`.
  """

  def __init__(self, layout: Layout = gin.REQUIRED, model: ModelConfig = gin.REQUIRED,
               optimizer=gin.REQUIRED, codec: ListeningCodec | None = None):
    self.layout, self.optimizer = layout, optimizer
    self.model_config = StageConfig(model, layout)  # what soundlm.train records
    self.model = DecoderLM(model, layout.padded_vocab_size)
    if codec is not None:
      if layout.stage == "semantic":
        raise ValueError(f"codec {codec.name!r}: the semantic stage makes no codec tokens "
                         "to decode (give a codec to the coarse or fine stage)")
      codec.check_tokens(
          codebook_size=layout.codebook_size,
          num_levels=layout.num_coarse_levels if layout.stage == "coarse" else layout.num_levels,
          model_name=f"AudioLM {layout.stage} stage")
    self.codec = codec

  def _tokens(self, batch):
    tokens = batch["tokens"]
    if tokens.ndim != 2 or tokens.shape[1] < 2:
      raise ValueError(f"batch['tokens'] must be [batch, length>=2], got {tokens.shape}")
    return tokens.astype(jnp.int32)

  def check_batch(self, batch):
    """Refuses host batches with ids outside the stage's vocabulary."""
    check_ids("batch['tokens']", batch["tokens"], self.layout.vocab_size)

  def init(self, rng, batch):
    params = self.model.init(rng, self._tokens(batch)[:, :-1])["params"]
    return {"params": {"model": params}}

  def _metrics(self, variables, batch, rng, deterministic):
    tokens = self._tokens(batch)
    logits = self.model.apply({"params": variables["params"]["model"]}, tokens[:, :-1],
                              deterministic=deterministic, rngs={"dropout": rng})
    targets = tokens[:, 1:]
    cross_entropy, weights, logits = target_cross_entropy(logits, targets, self.layout)
    count = jnp.maximum(weights.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets) * weights
    return cross_entropy.sum() / count, {"accuracy": correct.sum() / count,
                                         "targets": weights.sum()}

  def loss(self, variables, batch, rng, step):
    del step
    loss, metrics = self._metrics(variables, batch, rng, deterministic=False)
    return loss, (metrics, {})

  def phases(self):
    return [trainer.Phase("model", self.loss, self.optimizer)]

  def evaluate(self, variables, batch, rng):
    loss, metrics = self._metrics(variables, batch, rng, deterministic=True)
    return {"loss": loss, **metrics}

  @property
  def sample_rate(self) -> int:
    """The rate of `eval_audio`'s waveforms: the codec's."""
    return self.codec.sample_rate

  @property
  def eval_audio(self):
    """With a codec, `(variables, batch, rng) -> {name: [B, N]}`, the
    trainer's clips to listen to: 'reference', the batch's codes decoded (the
    coarse stage's levels, or every level in the fine stage), and
    'generated', the model's sampled continuation of the first half of the
    target frames, given the whole conditioning, decoded. Padding decodes as
    code 0. None without a codec."""
    return None if self.codec is None else self._eval_audio

  def _eval_audio(self, variables, batch, rng):
    layout = self.layout
    tokens = self._tokens(batch)
    num_frames = layout.crop_frames
    if tokens.shape[1] != layout.sequence_length(num_frames):
      raise ValueError(f"batch['tokens'] has {tokens.shape[1]} ids; a {layout.stage} crop "
                       f"has {layout.sequence_length(num_frames)}")
    targets = layout.target_length(num_frames)
    prompt_targets = targets // layout.target_levels // 2 * layout.target_levels
    prompt = tokens[:, :tokens.shape[1] - targets + prompt_targets]
    generated = Decoder(self.model, layout).sample(
        variables["params"]["model"], prompt, rng_lib.row_keys(rng, tokens.shape[0]),
        prompt_targets, targets - prompt_targets, SamplingConfig())
    clips = {}
    for name, sequence in (("reference", tokens),
                           ("generated", jnp.concatenate([prompt, generated], axis=1))):
      codes = layout.from_sequence(sequence)
      codes = codes[1] if layout.stage == "coarse" else codes
      clips[name] = self.codec.decode(jnp.clip(codes, 0, layout.codebook_size - 1))
    return clips
