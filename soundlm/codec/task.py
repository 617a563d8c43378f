"""SoundStream training task for the shared trainer.

Two parameter groups and two phases per step: the discriminators
('discriminator', hinge loss) and then the generator ('generator':
multi-scale mel reconstruction + adversarial hinge + feature matching +
RVQ commitment). The generator's adversarial and feature terms switch on at
`discriminator_start_step`, when the discriminator phase starts; with
`discriminator_start_step=None` the discriminators never train and the
generator's loss is reconstruction only. RVQ EMA
statistics live in the 'quantizer' collection and are returned as updates by
the generator phase only. Before `quantizer_start_step` the RVQ is bypassed
(the decoder sees the encoder's output) and its codebooks stay untouched; the
first step after it k-means-initialises them on the embeddings the encoder
has learned by then.
"""
from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from soundlm import trainer
from soundlm.codec import losses
from soundlm.codec.discriminators import SoundStreamDiscriminator
from soundlm.codec.model import SoundStream, SoundStreamConfig
from soundlm.layers.rvq import COLLECTION


@gin.configurable
class CodecTask:
  """Adversarial SoundStream training; weights default to the paper's (1, 100, 1).

  `waveform_weight` adds a time-domain term, `waveform_loss` 'l1' (EnCodec's
  mean |x - x_hat|) or 'mse' (mean (x - x_hat)^2, the SI-SNR's own error),
  off in the paper recipe: the mel loss has no phase, so without it (or the
  adversarial terms) the output never aligns with the input and SI-SNR stays
  near -30 dB; with it a small codec fits one batch to positive SI-SNR in a
  few hundred steps.
  """

  def __init__(self, config: SoundStreamConfig = gin.REQUIRED,
               discriminator: SoundStreamDiscriminator = gin.REQUIRED,
               generator_optimizer: optax.GradientTransformation = gin.REQUIRED,
               discriminator_optimizer: optax.GradientTransformation = gin.REQUIRED,
               discriminator_start_step: Optional[int] = 0, adversarial_weight: float = 1.0,
               feature_weight: float = 100.0, reconstruction_weight: float = 1.0,
               mel_windows: Sequence[int] = losses.MEL_WINDOWS, num_mels: int = 64,
               waveform_weight: float = 0.0, waveform_loss: str = "l1",
               quantizer_start_step: int = 0, feature_key: str = "waveform"):
    if discriminator_start_step is not None and discriminator_start_step < 0:
      raise ValueError(
          f"discriminator_start_step must be >= 0, got {discriminator_start_step}")
    self.model_config = config  # what soundlm.train records in model.json
    self.model, self.discriminator = SoundStream(config), discriminator
    self.generator_optimizer = generator_optimizer
    self.discriminator_optimizer = discriminator_optimizer
    self.discriminator_start_step = discriminator_start_step
    self.adversarial_weight, self.feature_weight = adversarial_weight, feature_weight
    self.reconstruction_weight = reconstruction_weight
    self.mel_windows, self.num_mels = tuple(mel_windows), num_mels
    if waveform_weight < 0:
      raise ValueError(f"waveform_weight must be >= 0, got {waveform_weight}")
    if waveform_loss not in losses.WAVEFORM_LOSSES:
      raise ValueError(f"waveform_loss must be one of {sorted(losses.WAVEFORM_LOSSES)}, "
                       f"got {waveform_loss!r}")
    self.waveform_weight, self.waveform_loss = waveform_weight, waveform_loss
    if quantizer_start_step < 0:
      raise ValueError(f"quantizer_start_step must be >= 0, got {quantizer_start_step}")
    self.quantizer_start_step = quantizer_start_step
    self.feature_key = feature_key

  def _waveform(self, batch):
    if self.feature_key not in batch:
      raise ValueError(f"batch has no {self.feature_key!r} (keys: {sorted(batch)})")
    wav = batch[self.feature_key]
    if wav.ndim != 2 or wav.shape[1] % self.model.hop_length:
      raise ValueError(f"batch[{self.feature_key!r}] must be [batch, samples] with samples a "
                       f"multiple of {self.model.hop_length}, got shape {wav.shape}")
    return wav.astype(jnp.float32)

  def init(self, rng, batch):
    wav = self._waveform(batch)
    generator_rng, discriminator_rng = jax.random.split(rng)
    generator = self.model.init(generator_rng, wav)
    discriminator = self.discriminator.init(discriminator_rng, wav)
    return {"params": {"generator": generator["params"],
                       "discriminator": discriminator["params"]},
            COLLECTION: generator[COLLECTION]}

  def _reconstruct(self, variables, wav, rng, step):
    """Training-mode reconstruction: (waveform, QuantizerOutput, new quantizer state).

    Before `quantizer_start_step` the decoder gets the encoder's output and
    the quantizer's state is kept as it was (so it is still uninitialised at
    the start step). A select, not a `lax.cond` around the model: XLA:CPU ran
    the whole step about 4x slower inside a conditional.
    """
    generator = {"params": variables["params"]["generator"], COLLECTION: variables[COLLECTION]}
    embeddings = self.model.apply(generator, wav, method=SoundStream.embed)
    output, updates = self.model.apply(
        generator, embeddings, train=True, rngs={COLLECTION: rng}, mutable=[COLLECTION],
        method=SoundStream.quantize)
    state = updates[COLLECTION]
    if self.quantizer_start_step:
      active = step >= self.quantizer_start_step
      keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
      state = jax.tree_util.tree_map(keep, state, variables[COLLECTION])
      output = output.replace(
          quantized=keep(output.quantized, embeddings),
          codes=keep(output.codes, 0), commitment_loss=keep(output.commitment_loss, 0.0),
          perplexity=keep(output.perplexity, 0.0), dead_codes=keep(output.dead_codes, 0.0))
    recon = self.model.apply(generator, output.quantized, method=SoundStream.synthesize)
    return recon, output, state

  def _discriminate(self, variables, wav):
    return self.discriminator.apply({"params": variables["params"]["discriminator"]}, wav)

  def discriminator_loss(self, variables, batch, rng, step):
    wav = self._waveform(batch)
    recon, _, _ = self._reconstruct(variables, wav, rng, step)
    real_logits, _ = self._discriminate(variables, wav)
    fake_logits, _ = self._discriminate(variables, jax.lax.stop_gradient(recon))
    loss = losses.discriminator_hinge_loss(real_logits, fake_logits)
    metrics = {"real_logit": sum(jnp.mean(r) for r in real_logits) / len(real_logits),
               "fake_logit": sum(jnp.mean(f) for f in fake_logits) / len(fake_logits)}
    return loss, (metrics, {})

  def _adversarial_terms(self, variables, wav, recon):
    """(hinge generator loss, feature matching loss)."""
    _, real_features = self._discriminate(variables, wav)
    fake_logits, fake_features = self._discriminate(variables, recon)
    return (losses.generator_hinge_loss(fake_logits),
            losses.feature_matching_loss(real_features, fake_features))

  def generator_loss(self, variables, batch, rng, step):
    wav = self._waveform(batch)
    recon, quantized, quantizer_state = self._reconstruct(variables, wav, rng, step)
    mel_l1, mel_log = losses.multiscale_mel_terms(wav, recon, self.model.sample_rate,
                                                  self.mel_windows, self.num_mels)
    mel = mel_l1 + mel_log
    if self.discriminator_start_step is None:  # reconstruction only
      adversarial, feature = jnp.zeros(()), jnp.zeros(())
    else:
      adversarial, feature = jax.lax.cond(
          step >= self.discriminator_start_step,
          lambda: self._adversarial_terms(variables, wav, recon),
          lambda: (jnp.zeros(()), jnp.zeros(())))
    waveform = losses.WAVEFORM_LOSSES[self.waveform_loss](wav - recon)
    loss = (self.reconstruction_weight * mel + self.waveform_weight * waveform
            + self.adversarial_weight * adversarial + self.feature_weight * feature
            + quantized.commitment_loss)
    metrics = {"mel_loss": mel, "mel_l1_loss": mel_l1, "mel_log_loss": mel_log,
               "waveform_loss": waveform, "adversarial_loss": adversarial,
               "feature_loss": feature,
               "commitment_loss": quantized.commitment_loss,
               "si_snr": jnp.mean(losses.si_snr(wav, recon))}
    for level in range(self.model.num_levels):
      metrics[f"perplexity/level_{level}"] = quantized.perplexity[level]
      metrics[f"dead_codes/level_{level}"] = quantized.dead_codes[level]
    return loss, (metrics, {COLLECTION: quantizer_state})

  def phases(self):
    generator = trainer.Phase("generator", self.generator_loss, self.generator_optimizer)
    if self.discriminator_start_step is None:
      return [generator]
    return [trainer.Phase("discriminator", self.discriminator_loss,
                          self.discriminator_optimizer,
                          start_step=self.discriminator_start_step), generator]

  def evaluate(self, variables, batch, rng):
    """Reconstruction quality with all levels and with one level.

    SI-SNR only rises once the output is phase-aligned with the input, which
    the mel loss alone never asks for (it comes from the adversarial terms):
    early in training it stays near -30 dB whatever the mel loss does. Beside
    it: `envelope_correlation` (does the output follow the input's
    loudness), `xcorr_peak` and `xcorr_lag` (the best normalised
    cross-correlation within one frame and its lag in samples), and
    `baseline/mismatched_mel_distance`, the mel distance between each clip
    and another clip of the batch: a `mel_distance` above it carries no
    information about the input. `unquantized/...` decodes the encoder's
    output without the RVQ: the autoencoder's own quality, which the codes
    can at best reach (and the only meaningful row before
    `quantizer_start_step`).
    """
    del rng
    wav = self._waveform(batch)
    generator = {"params": variables["params"]["generator"], COLLECTION: variables[COLLECTION]}
    rate = self.model.sample_rate
    metrics = {"baseline/mismatched_mel_distance": losses.mel_distance(
        wav, losses.mismatched(wav), rate)}
    reconstructions = {
        "unquantized": self.model.apply(generator, wav, method=SoundStream.autoencode)[0]}
    for name, levels in (("all_levels", self.model.num_levels), ("one_level", 1)):
      reconstructions[name], _ = self.model.apply(generator, wav, num_levels=levels)
    for name, recon in reconstructions.items():
      metrics[f"{name}/mel_distance"] = losses.mel_distance(wav, recon, rate)
      metrics[f"{name}/si_snr"] = jnp.mean(losses.si_snr(wav, recon))
      metrics[f"{name}/mel_loss"] = losses.multiscale_mel_loss(
          wav, recon, rate, self.mel_windows, self.num_mels)
      metrics[f"{name}/envelope_correlation"] = jnp.mean(
          losses.envelope_correlation(wav, recon, frame=self.model.hop_length))
      lag, peak = losses.best_lag(wav, recon, max_lag=self.model.hop_length)
      metrics[f"{name}/xcorr_peak"] = jnp.mean(peak)
      metrics[f"{name}/xcorr_lag"] = jnp.mean(jnp.abs(lag).astype(jnp.float32))
    return metrics

  @property
  def sample_rate(self) -> int:
    """The rate of `eval_audio`'s waveforms."""
    return self.model.sample_rate

  def eval_audio(self, variables, batch, rng):
    """What `evaluate` measures, to listen to (the trainer writes the first
    clips to TensorBoard): the input and its reconstructions with all levels
    and with one level, each [B, N]."""
    del rng
    wav = self._waveform(batch)
    generator = {"params": variables["params"]["generator"], COLLECTION: variables[COLLECTION]}
    clips = {"input": wav}
    for name, levels in (("all_levels", self.model.num_levels), ("one_level", 1)):
      clips[name], _ = self.model.apply(generator, wav, num_levels=levels)
    return clips
