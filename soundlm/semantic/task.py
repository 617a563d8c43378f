"""w2v-BERT pre-training as a trainer task (parameter group 'model').

Batches hold 'wav': float32 [B, N] 16 kHz crops. The loss is
contrastive_weight * contrastive + diversity_weight * diversity +
mlm_weight * masked prediction; the Gumbel temperature decays per step from
`gumbel_start` to `gumbel_end` as in wav2vec 2.0.
"""
import gin
import jax
import jax.numpy as jnp

from soundlm import trainer
from soundlm.semantic import losses, masking
from soundlm.semantic.config import W2vBertConfig
from soundlm.semantic.encoder import input_features
from soundlm.semantic.features import check_waveform
from soundlm.semantic.model import W2vBertPretrainer


@gin.configurable
class W2vBertPretrainTask:
  def __init__(self, config: W2vBertConfig = gin.REQUIRED, *, mask_prob: float = 0.065,
               mask_length: int = 10, num_negatives: int = 100,
               contrastive_temperature: float = 0.1, gumbel_start: float = 2.0,
               gumbel_end: float = 0.5, gumbel_decay: float = 0.999995,
               contrastive_weight: float = 1.0, diversity_weight: float = 0.1,
               mlm_weight: float = 1.0, optimizer=None, dtype: str = "float32"):
    self.config = config
    self.model_config = config  # what soundlm.train records in model.json
    self.model = W2vBertPretrainer(config, dtype=jnp.dtype(dtype))
    self.mask_prob, self.mask_length = mask_prob, mask_length
    self.num_negatives = num_negatives
    self.contrastive_temperature = contrastive_temperature
    self.gumbel = (gumbel_start, gumbel_end, gumbel_decay)
    self.weights = (contrastive_weight, diversity_weight, mlm_weight)
    self.optimizer = optimizer if optimizer is not None else trainer.make_optimizer()
    masking.span_mask(jax.random.key(0), 1, 1, mask_prob, mask_length)  # validates

  def _features(self, batch):
    if "wav" not in batch:
      raise ValueError(f"batch: expected key 'wav' (float32 [B, N]), got {sorted(batch)}")
    check_waveform(batch["wav"], name="batch['wav']")
    return input_features(batch["wav"], self.config)

  def init(self, rng, batch):
    features = self._features(batch)
    params_rng, mask_rng = jax.random.split(rng)
    variables = self.model.init(params_rng, features, self._frame_mask(mask_rng, features))
    return {"params": {"model": variables["params"]}}

  def _frame_mask(self, rng, features):
    frames = self._frames(features)
    return masking.span_mask(rng, features.shape[0], frames, self.mask_prob,
                             self.mask_length)

  def _frames(self, features):
    return features.shape[1] // 4 if self.config.frontend == "conv" else features.shape[1]

  def temperature(self, step):
    start, end, decay = self.gumbel
    return jnp.maximum(start * decay ** step.astype(jnp.float32), end)

  def _losses(self, params, batch, rng, step, deterministic):
    features = self._features(batch)
    mask_rng, negatives_rng, dropout_rng, gumbel_rng = jax.random.split(rng, 4)
    mask = self._frame_mask(mask_rng, features)
    out = self.model.apply({"params": params}, features, mask,
                           temperature=self.temperature(step), deterministic=deterministic,
                           rngs={"dropout": dropout_rng, "gumbel": gumbel_rng})
    negatives = losses.sample_negatives(negatives_rng, mask, self.num_negatives)
    contrastive, contrastive_accuracy = losses.contrastive_loss(
        out["context"], out["targets"], mask, negatives, self.contrastive_temperature)
    diversity, perplexity = losses.diversity_loss(out["code_probs"], self.config.codebook_size)
    mlm, mlm_accuracy = losses.masked_prediction_loss(out["mlm_logits"], out["target_ids"],
                                                      mask)
    wc, wd, wm = self.weights
    total = wc * contrastive + wd * diversity + wm * mlm
    metrics = {"contrastive": contrastive, "diversity": diversity, "mlm": mlm,
               "contrastive_accuracy": contrastive_accuracy, "mlm_accuracy": mlm_accuracy,
               "code_perplexity": perplexity, "mask_ratio": mask.mean(),
               "gumbel_temperature": self.temperature(step)}
    return total, metrics

  def loss_fn(self, variables, batch, rng, step):
    loss, metrics = self._losses(variables["params"]["model"], batch, rng, step,
                                 deterministic=False)
    return loss, (metrics, {})

  def phases(self):
    return [trainer.Phase("model", self.loss_fn, self.optimizer)]

  def evaluate(self, variables, batch, rng):
    loss, metrics = self._losses(variables["params"]["model"], batch, rng,
                                 jnp.asarray(0), deterministic=True)
    return {"loss": loss, **metrics}
