"""End-to-end generation: prompt audio -> semantic tokens -> stage 1 -> acoustic
tokens (SoundStorm, or AudioLM stages 2 + 3) -> SoundStream decoding -> audio.

    python -m soundlm.generate --gin_file=gin/generate/quickstart.gin \
        --prompt=speech.wav --duration=4 --output=continued.wav

The prompt's own acoustic tokens condition the acoustic generator, so voice
and recording conditions carry over; without a prompt the pipeline generates
unconditionally. Every stage is jitted and batched; SoundStorm and the AR
stages run over the mesh they were given.
"""
import argparse
import logging
import math
import sys
from typing import Sequence

import gin
import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh


from soundlm import rng as rng_lib
from soundlm.audiolm.api import AudioLM
from soundlm.audiolm.decoding import SamplingConfig
from soundlm.codec.api import Codec
from soundlm.io.audio import read_audio, resample, write_wav
from soundlm.io.token_space import TokenSpace
from soundlm.semantic.api import SemanticTokenizer
from soundlm.soundstorm.api import SoundStorm

ACOUSTIC_GENERATORS = ("soundstorm", "audiolm")


def _check_compatible(codec: Codec, tokenizer: SemanticTokenizer, audiolm: AudioLM,
                      soundstorm: SoundStorm | None):
  """Refuses models trained for another token space than the tokenizers give."""
  space = TokenSpace.of(codec, tokenizer)
  where = "the codec and semantic tokenizer"
  for stage, (decoder, _) in audiolm.stages.items():
    space.check_compatible(**decoder.layout.token_needs(), where=where,
                           model=f"AudioLM's {stage} stage (checkpoints of different configs?)")
  if soundstorm is not None:
    space.check_compatible(**soundstorm.model.config.token_needs(), where=where,
                           model="SoundStorm (checkpoints of different configs?)")


@gin.configurable
class Pipeline:
  """The chained models, with the sampling settings used by default."""

  def __init__(self, codec: Codec, tokenizer: SemanticTokenizer, audiolm: AudioLM,
               soundstorm: SoundStorm | None = None, *, acoustic: str = "soundstorm",
               temperature: float = 0.8):
    """Each model places its own parameters and batches (its partitioner)."""
    _check_compatible(codec, tokenizer, audiolm, soundstorm)
    if acoustic not in ACOUSTIC_GENERATORS:
      raise ValueError(f"acoustic must be one of {ACOUSTIC_GENERATORS}, got {acoustic!r}")
    self.codec, self.tokenizer = codec, tokenizer
    self.audiolm, self.soundstorm = audiolm, soundstorm
    self.acoustic, self.temperature = acoustic, temperature
    self.frames_per_semantic = round(codec.frame_rate / tokenizer.frame_rate)
    self.samples_per_semantic = codec.hop_length * self.frames_per_semantic

  @property
  def sample_rate(self) -> int:
    return self.codec.sample_rate

  @classmethod
  def random(cls, config: str = "tiny", seed: int = 0, *, mesh: Mesh | None = None,
             rules=None, **kwargs) -> "Pipeline":
    """Randomly initialised models of one size: for tests and benchmarks."""
    codec = Codec.random(config, seed, mesh=mesh)
    tokenizer = SemanticTokenizer.random(config, seed, mesh=mesh)
    sizes = dict(semantic_vocab=tokenizer.vocab_size, codebook_size=codec.codebook_size,
                 num_levels=codec.num_levels)
    audiolm = AudioLM.random(config, seed=seed, num_coarse_levels=min(4, codec.num_levels - 1),
                             mesh=mesh, rules=rules, **sizes)
    soundstorm = SoundStorm.random(config, seed=seed, mesh=mesh, rules=rules, **sizes)
    return cls(codec, tokenizer, audiolm, soundstorm, **kwargs)

  # --- inputs --------------------------------------------------------------

  def load_prompt(self, path: str) -> np.ndarray:
    """Mono float32 samples of an audio file (a local path or a gs:// URI) at
    the codec's sample rate."""
    if not epath.Path(path).is_file():
      raise FileNotFoundError(f"prompt file {path!r} does not exist")
    wav, _ = read_audio(path, self.sample_rate)
    return wav

  def _frames(self, duration: float) -> int:
    frames = duration * self.tokenizer.frame_rate
    if duration <= 0 or abs(frames - round(frames)) > 1e-6:
      raise ValueError(f"duration must be a positive multiple of "
                       f"{1 / self.tokenizer.frame_rate:g} s (one semantic frame), "
                       f"got {duration}")
    return round(frames)

  # --- generation ----------------------------------------------------------

  def generate(self, prompts: np.ndarray | None, duration: float, rng=0, *,
               batch_size: int | None = None, acoustic: str | None = None,
               keep_prompt: bool = True, temperature: float | None = None
               ) -> np.ndarray:
    """Audio float32 [B, duration x sample_rate].

    prompts: float32 [B, N] at the codec's sample rate, or None (then
    `batch_size` unconditional examples). rng: a seed, one key, or one key
    per example (`soundlm.rng`); an example's audio depends on its own key only. The prompt is used in whole
    semantic frames (`samples_per_semantic` samples each); with
    `keep_prompt` those samples start the output unchanged.
    """
    acoustic = acoustic or self.acoustic
    if acoustic not in ACOUSTIC_GENERATORS:
      raise ValueError(f"acoustic must be one of {ACOUSTIC_GENERATORS}, got {acoustic!r}")
    if acoustic == "soundstorm" and self.soundstorm is None:
      raise ValueError("acoustic='soundstorm' but the pipeline has no SoundStorm model")
    temperature = self.temperature if temperature is None else float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
      raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    num_semantic = self._frames(duration)
    semantic_prompt, prompt_codes, kept = self._encode_prompt(
        prompts, duration, num_semantic, batch_size)
    keys = rng_lib.row_keys(rng, semantic_prompt.shape[0])
    config = SamplingConfig(temperature=temperature)
    semantic = self._continue_semantic(semantic_prompt, num_semantic,
                                       rng_lib.fold_rows(keys, 1), config)
    num_frames = num_semantic * self.frames_per_semantic
    if acoustic == "soundstorm":
      codes = self.soundstorm.generate(
          semantic, num_frames, prompt_codes=prompt_codes, rng=rng_lib.fold_rows(keys, 2),
          temperature=temperature)
    else:
      coarse = self._continue_coarse(semantic, prompt_codes, rng_lib.fold_rows(keys, 2),
                                     config)
      codes = self.audiolm.generate_fine(coarse, rng_lib.fold_rows(keys, 3),
                                         prompt_codes=prompt_codes, config=config)
    audio = np.array(self.codec.decode(codes))
    if keep_prompt and kept is not None:
      audio[:, :kept.shape[1]] = kept
    return audio

  def _window(self, stage: str) -> int:
    return self.audiolm.stages[stage][0].layout.crop_semantic_frames

  def _prompt_in_window(self, num_prompt: int, stage: str) -> int:
    """Leading prompt frames to leave out of a stage's first window.

    A prompt that fills the stage's window is cut to its last half window
    (the context the stage's sliding windows keep); the frames left out are
    copied to the output unchanged.
    """
    window = self._window(stage)
    return 0 if num_prompt < window else num_prompt - window // 2

  def _continue_semantic(self, prompt, num_semantic, rng, config):
    drop = self._prompt_in_window(prompt.shape[1], "semantic")
    tail = self.audiolm.generate_semantic(prompt[:, drop:], num_semantic - prompt.shape[1],
                                          rng, config=config)
    return np.concatenate([prompt[:, :drop], tail], axis=1)

  def _continue_coarse(self, semantic, prompt_codes, rng, config):
    if prompt_codes is None:
      return self.audiolm.generate_coarse(semantic, None, rng, config=config)
    r = self.frames_per_semantic
    drop = self._prompt_in_window(prompt_codes.shape[1] // r, "coarse")
    tail = self.audiolm.generate_coarse(semantic[:, drop:], prompt_codes[:, r * drop:], rng,
                                        config=config)
    levels = tail.shape[2]
    return np.concatenate([prompt_codes[:, :r * drop, :levels], tail], axis=1)

  def _encode_prompt(self, prompts, duration, num_semantic, batch_size):
    """(semantic prompt [B, Tp], codes [B, r*Tp, Q] or None, samples used or None)."""
    if prompts is None:
      if not batch_size or batch_size < 1:
        raise ValueError("batch_size must be >= 1 when there is no prompt")
      return np.zeros((batch_size, 0), np.int32), None, None
    prompts = np.asarray(prompts)
    if not np.issubdtype(prompts.dtype, np.floating):
      raise ValueError(f"prompts must be float audio in [-1, 1], got {prompts.dtype} "
                       "(scale integer PCM first, e.g. int16 / 32768)")
    prompts = prompts.astype(np.float32)
    if not np.isfinite(prompts).all():
      raise ValueError("prompts contain NaN or infinite samples")
    if prompts.ndim != 2:
      raise ValueError(f"prompts must be [batch, samples], got shape {prompts.shape}")
    if batch_size is not None and batch_size != prompts.shape[0]:
      raise ValueError(f"batch_size {batch_size} differs from {prompts.shape[0]} prompts")
    num_prompt = prompts.shape[1] // self.samples_per_semantic
    if num_prompt < 1:
      raise ValueError(f"the prompt has {prompts.shape[1]} samples, shorter than one "
                       f"semantic frame ({self.samples_per_semantic} samples)")
    if num_prompt >= num_semantic:
      raise ValueError(f"the prompt ({prompts.shape[1] / self.sample_rate:.2f} s) is not "
                       f"shorter than the requested output ({duration} s)")
    used = prompts[:, :num_prompt * self.samples_per_semantic]
    # The semantic tokenizer hears the prompt at its own rate (16 kHz beside a 24 kHz EnCodec).
    semantic = np.asarray(self.tokenizer.tokenize(
        resample(used, self.sample_rate, self.tokenizer.sample_rate)))
    codes = np.asarray(self.codec.encode(used))
    return semantic, codes, used

  def generate_items(self, items: Sequence, prompts: Sequence[np.ndarray | None]
                     ) -> np.ndarray:
    """The decode job's batch: items of one duration, options and prompt shape."""
    first = items[0]
    # Each item draws from its own seed, whatever batch it lands in.
    keys = jax.numpy.stack([jax.random.key(item.seed) for item in items])
    stacked = None if prompts[0] is None else np.stack(prompts)
    return self.generate(stacked, first.duration, keys, batch_size=len(items),
                         **dict(first.options))


@gin.configurable
def load_pipeline(codec_workdir: str = gin.REQUIRED, w2v_bert_workdir: str = gin.REQUIRED,
                  kmeans_path: str = gin.REQUIRED, semantic_workdir: str = gin.REQUIRED,
                  coarse_workdir: str = gin.REQUIRED, fine_workdir: str = gin.REQUIRED,
                  soundstorm_workdir: str | None = None, mesh: Mesh | None = None,
                  rules=None, **kwargs) -> Pipeline:
  """The pipeline from training work dirs (each holds model.json + checkpoints).
  `codec_workdir` may also be a Hugging Face EnCodec folder, 'hf:DIR,KBPS'
  (the levels the acoustic models were trained on, e.g. 6.0 for 8 levels), or
  a Mimi one, 'hf:DIR,levels=N'.

  With a mesh, AudioLM and SoundStorm parameters are laid out by `rules`
  (default: the gin-configured `logical_axis_rules`), the codec and the
  tokenizer are replicated, and every batch is split over the data axes.
  """
  codec = Codec.from_spec(codec_workdir, mesh=mesh)
  tokenizer = SemanticTokenizer.load(w2v_bert_workdir, kmeans_path, mesh=mesh)
  audiolm = AudioLM.load({"semantic": semantic_workdir, "coarse": coarse_workdir,
                          "fine": fine_workdir}, mesh=mesh, rules=rules)
  soundstorm = (SoundStorm.load(soundstorm_workdir, mesh=mesh, rules=rules)
                if soundstorm_workdir else None)
  return Pipeline(codec, tokenizer, audiolm, soundstorm, **kwargs)


def main(argv=None) -> int:
  from soundlm import gin_utils
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  gin_utils.add_flags(parser)
  parser.add_argument("--prompt", help="prompt audio file (omit for unconditional audio)")
  parser.add_argument("--duration", type=float, required=True, help="output seconds")
  parser.add_argument("--output", required=True, help="output .wav path")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--acoustic", choices=ACOUSTIC_GENERATORS, default=None)
  parser.add_argument("--temperature", type=float, default=None)
  args = gin_utils.parse_args(parser, argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)
  try:
    gin_utils.parse_from_args(args)
    pipeline = load_pipeline()
    prompts = None if args.prompt is None else pipeline.load_prompt(args.prompt)[None]
    audio = pipeline.generate(prompts, args.duration, args.seed, batch_size=1,
                              acoustic=args.acoustic, temperature=args.temperature)
  except (FileNotFoundError, ValueError) as error:
    parser.exit(2, f"error: {error}\n")
  write_wav(args.output, audio[0], pipeline.sample_rate)
  logging.info("wrote %s (%.2f s)", args.output, audio.shape[1] / pipeline.sample_rate)
  return 0


if __name__ == "__main__":
  sys.exit(main())
