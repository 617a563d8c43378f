"""SoundStream's training task (CodecTask) stepped by the shared trainer on
crops of the built-in speech: the generator's mel loss falls, the
discriminators stay untouched before `discriminator_start_step` and train
from it on, the residual quantizer waits for `quantizer_start_step` and then
uses many codes of every level on held-out speech."""
import jax
import numpy as np
import pytest

from soundlm import partitioning, trainer
from soundlm.codec.data import WaveformCrops
from soundlm.codec.discriminators import SoundStreamDiscriminator
from soundlm.codec.model import SoundStreamConfig
from soundlm.codec.task import CodecTask
from soundlm.layers.rvq import COLLECTION

START, STEPS = 24, 28  # the discriminators train from step 24 (0-based) of 28
QUANTIZER_START = 3  # the RVQ is bypassed for steps 0..2
BATCH, CROP = 4, 3200  # 0.2 s crops: 10 frames of 320 samples
# Smaller than gin/codec/tiny.gin (which takes minutes to compile on XLA:CPU):
# three encoder blocks of one residual unit, 320 samples per frame all the same.
CONFIG = SoundStreamConfig(channels=8, embedding_dim=32, strides=(4, 8, 10), dilations=(1,),
                           num_levels=4, codebook_size=16)


def _task():
  # No warm-up, so that the very first update of each phase moves its parameters.
  optimizer = lambda lr: trainer.make_optimizer(  # noqa: E731
      lr, warmup_steps=0, decay_steps=STEPS, b1=0.5, b2=0.9, weight_decay=0.0)
  discriminator = SoundStreamDiscriminator(
      wave_channels=4, wave_max_channels=32, num_scales=1, stft_channels=4,
      stft_multipliers=(1, 2), stft_window=512, stft_hop=128)
  return CodecTask(config=CONFIG, discriminator=discriminator,
                   generator_optimizer=optimizer(3e-3), discriminator_optimizer=optimizer(1e-3),
                   discriminator_start_step=START, quantizer_start_step=QUANTIZER_START,
                   mel_windows=(128, 512, 2048))


def _host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(task, [state before step 0, after step 1, ..., after STEPS] on the host,
  [metrics of each step])."""
  task, data = _task(), WaveformCrops(batch_size=BATCH, crop_length=CROP)
  # One device: the trainer's sharding is covered by its own tests. rbg keys:
  # XLA:CPU compiles the initialisers several times faster than threefry's.
  with jax.default_prng_impl("rbg"):
    run = trainer.Trainer(task, data, str(tmp_path_factory.mktemp("codec")),
                          num_steps=STEPS, mesh=partitioning.make_mesh(devices=jax.devices()[:1]),
                          async_checkpoints=False)
    run.checkpointer.close()  # The steps are taken here, not by run().
    state, _ = run.create_state(partitioning.global_batch(next(data), run.mesh))
    states, metrics = [_host(state)], []
    with partitioning.activate(run.mesh, run.rules):
      train_step = jax.jit(run.train_step)
      for _ in range(STEPS):
        state, step_metrics = train_step(state, partitioning.global_batch(next(data), run.mesh))
        states.append(_host(state))
        metrics.append({k: float(v) for k, v in jax.device_get(step_metrics).items()})
  assert all(m["finite"] for m in metrics), metrics
  return task, states, metrics


def _held_out():
  return next(WaveformCrops(batch_size=8, crop_length=16_000, split="validation", seed=1))


def test_generator_mel_loss_falls(trained):
  task, states, metrics = trained
  assert all(np.isfinite(m["generator/mel_loss"]) for m in metrics)
  evaluate = jax.jit(task.evaluate)
  batch = _held_out()
  mel = {step: float(evaluate({"params": states[step]["params"], **states[step]["collections"]},
                              batch, jax.random.key(0))["all_levels/mel_loss"])
         for step in (1, START)}
  # From after the first step (which initialises the codebooks by k-means on
  # its batch) to the discriminators' start, the generator alone minimises it.
  assert mel[START] < 0.92 * mel[1], mel


def _same(a, b):
  a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _kernels(params):
  return [x for x in jax.tree_util.tree_leaves(params) if x.ndim > 1]


def test_discriminators_wait_for_their_start_step(trained):
  _, states, metrics = trained
  initial = states[0]
  for step in range(1, STEPS + 1):
    state, before = states[step], states[step - 1]
    assert int(state["step"]) == step
    assert not _same(state["params"]["generator"], before["params"]["generator"]), step
    if step <= START:
      # Bit-identical discriminator parameters and optimizer state.
      assert _same(state["params"]["discriminator"], initial["params"]["discriminator"]), step
      assert _same(state["opt_state"]["discriminator"],
                   initial["opt_state"]["discriminator"]), step
    else:
      # Every kernel moves at every step from START on. (A logit's bias can
      # keep a zero gradient: the hinge loss's is the difference of two
      # fractions of logits inside the margin.)
      moved = [not np.array_equal(x, y) for x, y in zip(
          _kernels(state["params"]["discriminator"]),
          _kernels(before["params"]["discriminator"]))]
      assert moved and all(moved), (step, moved)
  # One optimizer update per step from START on (Adam's and the schedule's counts).
  counts = [int(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(
      states[-1]["opt_state"]["discriminator"]) if "count" in jax.tree_util.keystr(path)]
  assert counts and all(c == STEPS - START for c in counts), counts
  for step, record in enumerate(metrics):  # `step`: the state's step when it ran
    terms = [record["generator/adversarial_loss"], record["generator/feature_loss"],
             record["discriminator/loss"]]
    if step < START:
      assert terms == [0.0, 0.0, 0.0], (step, record)
    else:
      assert all(t > 0 for t in terms), (step, record)


def test_quantizer_waits_for_its_start_step(trained):
  """Before QUANTIZER_START the codebooks are untouched and no code is used
  (the decoder sees the encoder's output); the first step after it
  k-means-initialises them on that step's embeddings, which uses many codes."""
  _, states, metrics = trained
  initial = states[0]["collections"][COLLECTION]
  for step in range(1, QUANTIZER_START + 1):
    assert _same(states[step]["collections"][COLLECTION], initial), step
    assert metrics[step - 1]["generator/commitment_loss"] == 0.0
    assert metrics[step - 1]["generator/perplexity/level_0"] == 0.0
  quantizer = lambda step: states[step]["collections"][COLLECTION]["quantizer"]  # noqa: E731
  assert not bool(quantizer(QUANTIZER_START)["initialized"])
  started = quantizer(QUANTIZER_START + 1)
  assert bool(started["initialized"])
  assert not np.array_equal(started["codebook"], quantizer(0)["codebook"])
  assert metrics[QUANTIZER_START]["generator/commitment_loss"] > 0.0
  assert metrics[QUANTIZER_START]["generator/perplexity/level_0"] > 2.0, metrics[QUANTIZER_START]


def test_every_level_uses_many_codes_on_held_out_speech(trained):
  task, states, _ = trained
  wav = _held_out()["waveform"]
  variables = {"params": states[-1]["params"]["generator"],
               COLLECTION: states[-1]["collections"][COLLECTION]}
  codes = np.asarray(jax.jit(lambda v, w: task.model.apply(v, w, method="encode"))(
      variables, wav))
  assert codes.shape == (8, 50, CONFIG.num_levels)
  used = [len(np.unique(codes[..., q])) for q in range(CONFIG.num_levels)]
  assert all(n > 1 for n in used), used


def test_grad_norm_is_logged_before_clipping(trained):
  """`<phase>/grad_norm` is the norm of the gradient the optimizer receives,
  before its clipping to 1.0: the mel loss's gradient is far larger."""
  _, _, metrics = trained
  norms = [m["generator/grad_norm"] for m in metrics]
  assert all(np.isfinite(norms)) and max(norms) > 1.0, norms
  assert all(m["discriminator/grad_norm"] > 0 for m in metrics[START:]), metrics[START:]


def test_both_mel_terms_count_in_training(trained):
  _, _, metrics = trained
  for m in metrics:
    np.testing.assert_allclose(m["generator/mel_l1_loss"] + m["generator/mel_log_loss"],
                               m["generator/mel_loss"], rtol=1e-4)
    assert m["generator/mel_l1_loss"] > 0.03 * m["generator/mel_log_loss"], m


def test_evaluate_reports_figures_beside_si_snr(trained):
  task, states, _ = trained
  variables = {"params": states[-1]["params"], **states[-1]["collections"]}
  figures = {k: float(v) for k, v in jax.jit(task.evaluate)(
      variables, _held_out(), jax.random.key(0)).items()}
  for prefix in ("all_levels", "one_level", "unquantized"):
    for name in ("mel_distance", "si_snr", "mel_loss", "envelope_correlation", "xcorr_peak",
                 "xcorr_lag"):
      assert np.isfinite(figures[f"{prefix}/{name}"]), (prefix, name, figures)
    assert -1.0 <= figures[f"{prefix}/envelope_correlation"] <= 1.0, figures
    assert 0.0 <= figures[f"{prefix}/xcorr_peak"] <= 1.0, figures
    assert 0.0 <= figures[f"{prefix}/xcorr_lag"] <= CONFIG.hop_length, figures
  # Another clip of the batch is far from each clip: the no-information baseline.
  assert figures["baseline/mismatched_mel_distance"] > 0.5, figures


def test_waveform_terms_are_their_errors_and_unknown_ones_are_refused():
  from soundlm.codec import losses

  error = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
  np.testing.assert_allclose(losses.WAVEFORM_LOSSES["l1"](error), np.abs(error).mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.WAVEFORM_LOSSES["mse"](error), (error ** 2).mean(),
                             rtol=1e-6)
  with pytest.raises(ValueError, match=r"waveform_loss must be one of \['l1', 'mse'\], "
                                       r"got 'l2'"):
    CodecTask(config=CONFIG, discriminator=None, generator_optimizer=None,
              discriminator_optimizer=None, waveform_loss="l2")
