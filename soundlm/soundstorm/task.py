"""SoundStorm training through the shared trainer (one parameter group, 'model')."""
import gin
import jax
import jax.numpy as jnp
import optax

from soundlm import trainer
from soundlm.codec.listening import ListeningCodec
from soundlm.layers.ids import check_ids
from soundlm.soundstorm import decoding, schedule as schedule_lib
from soundlm.soundstorm.masking import sample_training_mask
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel


def level_targets(codes, level):
  """codes [B, T, Q], level [B] -> the codes of each example's level, [B, T]."""
  return jnp.take_along_axis(codes, level[:, None, None], axis=2)[..., 0]


def masked_cross_entropy(logits, targets, weights):
  """Mean cross-entropy and accuracy over the positions where `weights` is set."""
  weights = weights.astype(jnp.float32)
  count = jnp.maximum(weights.sum(), 1.0)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return (loss * weights).sum() / count, (correct * weights).sum() / count


@gin.configurable
class SoundStormTask:
  """Masked-token training with the paper's prompt/level/cosine masking.

  Batches hold 'semantic' int32 [B, T/r] and 'codes' int32 [B, T, Q] (ids in
  [0, K); the model reserves id K for the mask token), and optionally
  'padding_mask' bool [B, T] (True on real frames), as made by the data
  pipeline's SoundStorm feature converter. `unprompted_rate`: the fraction of
  examples trained without a prompt (0 in the paper; see `masking`).

  `codec`, the codec the codes came from (gin: `@soundlm.codec.listening_codec()`),
  makes the trainer's evaluation audible: see `eval_audio`.
  """

  def __init__(self, config: SoundStormConfig = gin.REQUIRED,
               optimizer: optax.GradientTransformation | None = None,
               unprompted_rate: float = 0.0, codec: ListeningCodec | None = None):
    if not 0.0 <= unprompted_rate <= 1.0:
      raise ValueError(f"unprompted_rate must be in [0, 1], got {unprompted_rate}")
    self.model_config = config  # what soundlm.train records in model.json
    self.model = SoundStormModel(config)
    self.optimizer = optimizer if optimizer is not None else trainer.make_optimizer()
    self.unprompted_rate = unprompted_rate
    if codec is not None:
      codec.check_tokens(codebook_size=config.codebook_size, num_levels=config.num_levels,
                         model_name="SoundStorm")
    self.codec = codec

  def check_batch(self, batch):
    """Refuses host batches with codes or semantic ids outside the model's
    vocabularies (the mask id K included: data never holds it)."""
    check_ids("batch['codes']", batch["codes"], self.model.codebook_size)
    check_ids("batch['semantic']", batch["semantic"], self.model.semantic_vocab)

  def init(self, rng, batch) -> dict:
    codes = batch["codes"]
    level = jnp.zeros((codes.shape[0],), jnp.int32)
    variables = self.model.init({"params": rng}, batch["semantic"], codes, level=level)
    return {"params": {"model": variables["params"]}}

  def phases(self):
    return [trainer.Phase("model", self.loss_fn, self.optimizer)]

  def loss_fn(self, variables, batch, rng, step):
    del step
    codes = batch["codes"]
    mask_rng, dropout_rng = jax.random.split(rng)
    batch_size, num_frames, num_levels = codes.shape
    padding_mask = batch.get("padding_mask")
    lengths = None
    if padding_mask is not None:
      padding_mask = padding_mask.astype(bool)
      lengths = padding_mask.sum(axis=1)
    mask = sample_training_mask(mask_rng, batch_size, num_frames, num_levels, lengths,
                                self.unprompted_rate)
    inputs = jnp.where(mask.input_mask, self.model.mask_id, codes)
    logits = self.model.apply(
        {"params": variables["params"]["model"]}, batch["semantic"], inputs,
        level=mask.level, padding_mask=padding_mask, deterministic=False,
        rngs={"dropout": dropout_rng})
    weights = level_targets(mask.loss_mask, mask.level)
    if padding_mask is not None:
      weights = weights & padding_mask
    loss, accuracy = masked_cross_entropy(logits, level_targets(codes, mask.level),
                                          weights)
    metrics = {"accuracy": accuracy, "masked_fraction": weights.mean()}
    return loss, (metrics, {})

  def evaluate(self, variables, batch, rng) -> dict:
    """Per-level accuracy with the coarser levels given and level q onwards masked."""
    del rng
    codes = batch["codes"]
    padding_mask = batch.get("padding_mask")
    if padding_mask is not None:
      padding_mask = padding_mask.astype(bool)
    weights = jnp.ones(codes.shape[:2], bool) if padding_mask is None else padding_mask
    params = {"params": variables["params"]["model"]}
    levels = jnp.arange(codes.shape[2])
    metrics = {}
    for q in range(codes.shape[2]):
      inputs = jnp.where(levels >= q, self.model.mask_id, codes)
      logits = self.model.apply(params, batch["semantic"], inputs, level=q,
                                padding_mask=padding_mask)
      loss, accuracy = masked_cross_entropy(logits, codes[..., q], weights)
      metrics[f"level_{q}/accuracy"] = accuracy
      metrics[f"level_{q}/loss"] = loss
    return metrics

  @property
  def sample_rate(self) -> int:
    """The rate of `eval_audio`'s waveforms: the codec's."""
    return self.codec.sample_rate

  @property
  def eval_audio(self):
    """With a codec, `(variables, batch, rng) -> {name: [B, N]}`, the
    trainer's clips to listen to: 'reference', the batch's codes decoded, and
    'generated', the model's MaskGIT decoding (the paper's schedule) from the
    batch's semantic tokens with the first half of the codes as its prompt,
    decoded. None without a codec (nothing to hear)."""
    return None if self.codec is None else self._eval_audio

  def _eval_audio(self, variables, batch, rng):
    codes = batch["codes"]
    num_frames = codes.shape[1]
    generated = decoding.decode(
        self.model, {"params": variables["params"]["model"]}, batch["semantic"],
        codes[:, :num_frames // 2], rng, num_frames=num_frames,
        schedule=schedule_lib.paper_schedule(self.model.num_levels)).codes
    return {"reference": self.codec.decode(codes), "generated": self.codec.decode(generated)}
