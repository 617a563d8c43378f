"""The codec learns the waveform, not only its spectrum: with the fast-learning
options (EnCodec's time-domain L1 term, no quantizer dropout, reconstruction
only) a small SoundStream fits one batch of speech to a positive SI-SNR within
STEPS steps, while the mel loss alone leaves SI-SNR far below zero."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from soundlm.codec.data import WaveformCrops
from soundlm.codec.discriminators import SoundStreamDiscriminator
from soundlm.codec.model import SoundStreamConfig
from soundlm.codec.task import CodecTask
from soundlm.layers.rvq import COLLECTION

STEPS = 120
WAVEFORM_WEIGHT, LEARNING_RATE, THRESHOLD_DB = 100.0, 3e-3, 5.0
CONFIG = SoundStreamConfig(channels=8, embedding_dim=32, strides=(4, 8, 10), dilations=(1,),
                           num_levels=4, codebook_size=16, quantizer_dropout_rate=0.0)


def _fit(waveform_weight: float, learning_rate: float):
  """Training SI-SNR (dB) of each of STEPS generator updates on one batch."""
  task = CodecTask(config=CONFIG, discriminator=SoundStreamDiscriminator(),
                   generator_optimizer=None, discriminator_optimizer=None,
                   discriminator_start_step=None, mel_windows=(128, 512, 2048),
                   waveform_weight=waveform_weight)
  wav = jnp.asarray(next(WaveformCrops(batch_size=2, crop_length=3200, seed=3))["waveform"])
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adam(learning_rate, b1=0.5, b2=0.9))
  with jax.default_prng_impl("rbg"):  # faster initialisers on XLA:CPU
    variables = task.model.init(jax.random.key(0), wav)
    params, quantizer = variables["params"], variables[COLLECTION]
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, quantizer, opt_state, i):
      def loss(p):
        return task.generator_loss({"params": {"generator": p}, COLLECTION: quantizer},
                                   {"waveform": wav}, jax.random.fold_in(jax.random.key(1), i), i)
      (_, (metrics, updates)), grads = jax.value_and_grad(loss, has_aux=True)(params)
      updates_p, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates_p), updates[COLLECTION], opt_state,
              metrics["si_snr"])

    si_snr = []
    for i in range(STEPS):
      params, quantizer, opt_state, value = step(params, quantizer, opt_state, i)
      si_snr.append(float(value))
  return np.array(si_snr)


def test_waveform_term_fits_one_batch_to_positive_si_snr():
  si_snr = _fit(waveform_weight=WAVEFORM_WEIGHT, learning_rate=LEARNING_RATE)
  assert np.all(np.isfinite(si_snr)), si_snr
  assert si_snr[:5].max() < -10.0, si_snr  # an untrained codec's output is unrelated
  assert si_snr[-10:].mean() > THRESHOLD_DB, si_snr
