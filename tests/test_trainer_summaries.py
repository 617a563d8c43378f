"""What the trainer writes for people to read: each phase's learning rate, the
eval figures in TensorBoard, a codec's clips to listen to (audio and
spectrograms), the codes and generations of SoundStorm and AudioLM's acoustic
stages decoded by their codec, and an evaluation compiled once per run."""
import dataclasses
import functools
import io
import json
import logging
import struct

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile
from tensorboardX.proto import event_pb2

from soundlm import partitioning, toy_lm, trainer
from soundlm.audiolm.layouts import Layout
from soundlm.audiolm.model import ModelConfig
from soundlm.audiolm.synthetic import MarkovStageData
from soundlm.audiolm.tasks import AudioLMTask
from soundlm.codec.api import listening_codec
from soundlm.codec.data import WaveformCrops
from soundlm.codec.discriminators import SoundStreamDiscriminator
from soundlm.codec.model import SoundStreamConfig
from soundlm.codec.task import CodecTask
from soundlm.soundstorm.model import SoundStormConfig
from soundlm.soundstorm.synthetic import KnownProcessCodes
from soundlm.soundstorm.task import SoundStormTask
from tests import toy_setup


def _records(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def _events(workdir):
  """Every summary value in the run's TensorBoard event files, as (step, value)."""
  values = []
  for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):  # TFRecord: length, its CRC, the record, its CRC
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      values += [(event.step, value) for value in event.summary.value]
  return values


def _scalars(workdir, tag):
  return {step: value.simple_value for step, value in _events(workdir) if value.tag == tag}


def _toy_task(**optimizer):
  return toy_lm.ToyLanguageModelTask(
      toy_lm.ToyLanguageModel(vocab_size=16, embed_dim=16, num_layers=1, num_heads=2,
                              mlp_dim=32),
      trainer.make_optimizer(**optimizer))


def _eval_data():
  return toy_lm.MarkovChainData(batch_size=8, seq_len=16, vocab_size=16, seed=7)


def test_logged_learning_rate_is_the_schedule_at_each_update(tmp_path):
  optimizer = dict(learning_rate=1e-2, warmup_steps=4, decay_steps=10)
  run = toy_setup.make_trainer(tmp_path, task=_toy_task(**optimizer), num_steps=8)
  run.run()
  schedule = trainer.make_optimizer(**optimizer).learning_rate
  logged = toy_setup.logged(tmp_path, "train/model/learning_rate")
  # Step s logs the rate of its update, the schedule after s - 1 updates:
  # warm-up 0, 2.5e-3, 5e-3, 7.5e-3, then the peak and the cosine decay.
  assert sorted(logged) == list(range(1, 9))
  np.testing.assert_allclose([logged[s] for s in range(1, 9)],
                             [float(schedule(s - 1)) for s in range(1, 9)], rtol=1e-6)
  np.testing.assert_allclose([logged[s] for s in (2, 5)], [2.5e-3, 1e-2], rtol=1e-6)
  tensorboard = _scalars(tmp_path, "train/model/learning_rate")
  np.testing.assert_allclose([tensorboard[s] for s in range(1, 9)],
                             [logged[s] for s in range(1, 9)], rtol=1e-6)


class LateGroupTask:
  """Group 'a' under a plain optax optimizer (no schedule to log); group 'b'
  under make_optimizer, from step 3 on."""

  def init(self, rng, batch):
    del rng, batch
    return {"params": {"a": jnp.ones(3), "b": jnp.ones(3)}}

  def _loss(self, name, variables, batch, rng, step):
    del rng, step
    return jnp.sum(variables["params"][name] ** 2) + 0.0 * jnp.sum(batch["tokens"]), ({}, {})

  def phases(self):
    return [trainer.Phase("a", lambda *args: self._loss("a", *args), optax.sgd(0.1)),
            trainer.Phase("b", lambda *args: self._loss("b", *args),
                          trainer.make_optimizer(0.5, warmup_steps=0, decay_steps=4),
                          start_step=3)]


def test_a_late_phase_logs_its_own_schedule_from_its_start(tmp_path):
  toy_setup.make_trainer(tmp_path, task=LateGroupTask(), num_steps=6).run()
  logged = toy_setup.logged(tmp_path, "train/b/learning_rate")
  schedule = trainer.make_optimizer(0.5, warmup_steps=0, decay_steps=4).learning_rate
  # No update (rate 0) before step 3 (0-based); then updates 0, 1, 2 of b's schedule.
  np.testing.assert_allclose([logged[s] for s in range(1, 7)],
                             [0.0, 0.0, 0.0] + [float(schedule(n)) for n in range(3)],
                             rtol=1e-6)
  assert logged[4] == pytest.approx(0.5)
  assert not any("train/a/learning_rate" in record for record in _records(tmp_path))


class _CompileLog(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_eval_compiles_once_and_its_figures_reach_tensorboard(tmp_path):
  log = _CompileLog()
  logger = logging.getLogger("jax._src.dispatch")
  logger.addHandler(log)
  try:
    with jax.log_compiles(True):
      toy_setup.make_trainer(tmp_path, task=_toy_task(learning_rate=1e-2, warmup_steps=2),
                             num_steps=6, eval_every=2, eval_data=_eval_data).run()
  finally:
    logger.removeHandler(log)
  compiles = [m for m in log.messages
              if m.startswith("Finished XLA compilation of jit(evaluate)")]
  assert len(compiles) == 1, compiles  # three evaluations, at steps 2, 4 and 6
  logged = {r["step"]: r["eval/loss"] for r in _records(tmp_path) if "eval/loss" in r}
  assert sorted(logged) == [2, 4, 6]
  assert _scalars(tmp_path, "eval/loss") == pytest.approx(logged, rel=1e-6)


class ToneTask(toy_lm.ToyLanguageModelTask):
  """A toy LM that also offers eval audio: a batch of sines whose amplitude
  is a parameter, so the clips change as it trains."""
  sample_rate = 8000

  def eval_audio(self, variables, batch, rng):
    del rng
    weight = jax.tree_util.tree_leaves(variables["params"]["model"])[0].ravel()[0]
    amplitude = jnp.tanh(jnp.abs(weight))
    rows = jnp.arange(batch["tokens"].shape[0], dtype=jnp.float32)[:, None]
    time = jnp.arange(1024, dtype=jnp.float32)[None] / self.sample_rate
    return {"tone": amplitude * jnp.sin(2 * jnp.pi * 440.0 * (1.0 + rows) * time)}


def _tags(workdir, kind):
  return {value.tag for _, value in _events(workdir) if value.HasField(kind)}


@pytest.mark.parametrize("settings, clips", [({"eval_audio_clips": 3}, 3),
                                             ({"eval_audio": False}, 0)])
def test_eval_audio_clips_are_capped_and_can_be_turned_off(tmp_path, settings, clips):
  task = ToneTask(_toy_task().model, trainer.make_optimizer())
  toy_setup.make_trainer(tmp_path, task=task, num_steps=2, eval_every=2,
                         eval_data=_eval_data, **settings).run()
  assert _tags(tmp_path, "audio") == {f"eval_audio/tone/{c}" for c in range(clips)}
  assert _tags(tmp_path, "image") == {f"eval_mel/tone/{c}" for c in range(clips)}
  assert "eval/loss" in _tags(tmp_path, "simple_value")


def test_log_mel_image_shows_a_tone_in_its_band():
  rate = 16_000
  time = np.arange(rate // 2) / rate
  loud, quiet = (trainer.log_mel_image(a * np.sin(2 * np.pi * 1000.0 * time), rate)
                 for a in (1.0, 0.01))
  assert loud.shape == (80, 1 + (rate // 2 - 1024) // 256)
  assert 0.0 <= loud.min() and loud.max() <= 1.0
  band = int(np.argmax(loud.mean(axis=1)[::-1]))  # rows run from high to low bands
  hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
  assert abs(band - (81 * hz_to_mel(1000.0) / hz_to_mel(rate / 2) - 1)) <= 1
  # One scale for every image: 40 dB quieter is half of the 80 dB range darker.
  assert loud.max() - quiet.max() == pytest.approx(0.5, abs=0.02)


def test_codec_evaluation_writes_its_clips_and_spectrograms(tmp_path):
  config = SoundStreamConfig(channels=8, embedding_dim=32, strides=(4, 8, 10), dilations=(1,),
                             num_levels=4, codebook_size=16)
  discriminator = SoundStreamDiscriminator(
      wave_channels=4, wave_max_channels=32, num_scales=1, stft_channels=4,
      stft_multipliers=(1, 2), stft_window=512, stft_hop=128)
  task = CodecTask(config=config, discriminator=discriminator,
                   generator_optimizer=trainer.make_optimizer(3e-3, warmup_steps=0),
                   discriminator_optimizer=trainer.make_optimizer(1e-3, warmup_steps=0),
                   discriminator_start_step=None, mel_windows=(128, 512))
  held_out = lambda: WaveformCrops(batch_size=4, crop_length=3200, split="validation",  # noqa: E731
                                   seed=1)
  data = WaveformCrops(batch_size=4, crop_length=3200)
  # The trainer's evaluation of a fresh codec: training adds a long compile
  # and nothing to what is written (run() calls it the same way).
  with jax.default_prng_impl("rbg"):  # XLA:CPU compiles rbg initialisers faster
    run = trainer.Trainer(task, data, str(tmp_path), eval_data=held_out,
                          mesh=partitioning.make_mesh(devices=jax.devices()[:1]),
                          async_checkpoints=False)
    run.checkpointer.close()
    state, _ = run.create_state(partitioning.global_batch(next(data), run.mesh))
    writer = trainer.MetricsWriter(str(tmp_path))
    with partitioning.activate(run.mesh, run.rules):
      run._evaluate(state, 1, writer, *run._compile_eval())
    writer.close()
  events = [value for _, value in _events(tmp_path)]
  audio = {v.tag: v.audio for v in events if v.HasField("audio")}
  names = ("input", "all_levels", "one_level")
  assert audio.keys() == {f"eval_audio/{n}/{c}" for n in names for c in (0, 1)}
  assert all(a.sample_rate == 16_000 and a.length_frames == 3200 for a in audio.values())
  # The input clips are the first two of the first eval batch (16-bit wav).
  expected = next(held_out())["waveform"][:2]
  for c in (0, 1):
    wav, rate = soundfile.read(io.BytesIO(audio[f"eval_audio/input/{c}"].encoded_audio_string))
    assert rate == 16_000
    np.testing.assert_allclose(wav, expected[c], atol=1 / 2 ** 15)
  images = {v.tag: v.image for v in events if v.HasField("image")}
  assert images.keys() == {f"eval_mel/{n}/{c}" for n in names for c in (0, 1)}
  assert all(i.height == 80 and i.width == 1 + (3200 - 1024) // 256 for i in images.values())
  assert {"eval/all_levels/mel_distance", "eval/one_level/si_snr"} <= {
      v.tag for v in events if v.HasField("simple_value")}


SOUNDSTORM = SoundStormConfig(semantic_vocab=16, codebook_size=64, num_levels=2, num_layers=1,
                              embed_dim=32, num_heads=2, head_dim=16, mlp_dim=64)
# AudioLM stages over the tiny codec's codes (64 per level): 8 acoustic frames.
AUDIOLM = {"coarse": Layout("coarse", semantic_vocab=16, codebook_size=64, num_levels=4,
                            num_coarse_levels=2, crop_seconds=0.16),
           "fine": Layout("fine", semantic_vocab=16, codebook_size=64, num_levels=4,
                          num_coarse_levels=2, crop_seconds=0.16)}


@functools.cache
def _tiny_codec():
  """The tiny codec's random weights (64 codes per level) decode the clips."""
  return listening_codec("tiny")


def _token_model_clips(workdir, task, data, held_out):
  """A fresh model's evaluation through the trainer (audio to TensorBoard),
  and its eval clips of the first held-out batch."""
  run = trainer.Trainer(task, data, str(workdir), eval_data=held_out,
                        mesh=partitioning.make_mesh(), async_checkpoints=False)
  run.checkpointer.close()
  state, _ = run.create_state(partitioning.global_batch(next(data), run.mesh))
  writer = trainer.MetricsWriter(str(workdir))
  with partitioning.activate(run.mesh, run.rules):
    eval_fn, audio_fn = run._compile_eval()
    run._evaluate(state, 1, writer, eval_fn, audio_fn)
    batch = partitioning.global_batch(next(held_out()), run.mesh)
    clips = jax.device_get(audio_fn({"params": state["params"]}, batch, jax.random.key(0)))
  writer.close()
  names = ("reference", "generated")
  assert _tags(workdir, "audio") == {f"eval_audio/{n}/{c}" for n in names for c in (0, 1)}
  assert _tags(workdir, "image") == {f"eval_mel/{n}/{c}" for n in names for c in (0, 1)}
  return clips


def _assert_prompt_kept(clips, frames, prompt_frames, hop=320):
  """The generation's prompt frames decode as the reference's (the codec's
  decoder is causal); the generated rest differs."""
  assert {n: c.shape for n, c in clips.items()} == {
      "reference": (2, frames * hop), "generated": (2, frames * hop)}
  kept = prompt_frames * hop
  np.testing.assert_allclose(clips["generated"][:, :kept], clips["reference"][:, :kept],
                             atol=1e-5)
  assert np.abs(clips["generated"][:, kept:] - clips["reference"][:, kept:]).max() > 1e-3


def test_soundstorm_evaluation_plays_the_codes_and_their_generation(tmp_path):
  task = SoundStormTask(SOUNDSTORM, trainer.make_optimizer(1e-3), codec=_tiny_codec())
  codes = functools.partial(KnownProcessCodes, batch_size=8, num_frames=16, num_levels=2,
                            codebook_size=64, semantic_vocab=16)
  clips = _token_model_clips(tmp_path, task, codes(), lambda: codes(seed=1))
  _assert_prompt_kept(clips, frames=16, prompt_frames=8)


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_audiolm_evaluation_plays_the_codes_and_their_continuation(tmp_path, stage):
  model = ModelConfig(num_layers=1, num_heads=2, head_dim=8, embed_dim=16, mlp_dim=32,
                      dropout_rate=0.0)
  task = AudioLMTask(AUDIOLM[stage], model, trainer.make_optimizer(1e-3), codec=_tiny_codec())
  sequences = functools.partial(MarkovStageData, AUDIOLM[stage], batch_size=8)
  clips = _token_model_clips(tmp_path, task, sequences(), lambda: sequences(seed=1))
  _assert_prompt_kept(clips, frames=8, prompt_frames=4)


@pytest.mark.parametrize("make_task, message", [
    (lambda: SoundStormTask(dataclasses.replace(SOUNDSTORM, codebook_size=16),
                            codec=_tiny_codec()),
     "8 levels of 64 codes; the SoundStorm model makes 2 levels of 16 codes"),
    (lambda: AudioLMTask(dataclasses.replace(AUDIOLM["fine"], num_levels=12),
                         ModelConfig(), trainer.make_optimizer(), codec=_tiny_codec()),
     "8 levels of 64 codes; the AudioLM fine stage model makes 12 levels"),
    (lambda: AudioLMTask(Layout("semantic"), ModelConfig(), trainer.make_optimizer(),
                         codec=_tiny_codec()),
     "the semantic stage makes no codec tokens"),
])
def test_a_codec_the_model_cannot_use_is_refused(make_task, message):
  with pytest.raises(ValueError, match=message):
    make_task()


def test_gin_builds_the_listening_codec_of_a_task():
  gin.clear_config()
  try:
    gin.parse_config("""
        import soundlm.codec.api
        import soundlm.soundstorm.task
        SoundStormTask.codec = @soundlm.codec.listening_codec()
        soundlm.codec.listening_codec.spec = 'tiny'
    """)
    task = SoundStormTask(dataclasses.replace(SOUNDSTORM, num_levels=8))
  finally:
    gin.clear_config()
  assert (task.codec.name, task.sample_rate) == ("tiny", 16_000)
