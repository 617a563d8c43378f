"""How good generated speech continuations are: voice kept, and told apart from real.

    figures = evaluate_generation(pipeline, prompt_seconds=1.0, duration=3.0)

Prompts are the first seconds of held-out built-in speech clips (the
validation split). The pipeline continues each prompt with every acoustic
generator it has (SoundStorm, AudioLM's coarse and fine stages), and only the
generated part, after the prompt samples the pipeline kept, is scored:

- speaker/<acoustic>: cosine similarity of the prompt's and the
  continuation's voice embeddings (`soundlm.evaluation.speaker`), beside
  baselines on the same prompts: the clip's own real continuation, another
  clip of the same speaker, clips of other speakers, and noise.
- detector/<acoustic>/accuracy: held-out accuracy of a classifier trained on
  codec tokens of the real continuations against those of the generated ones
  (`soundlm.evaluation.detector`); a prompt's real and generated continuations
  are held out together. 0.5 means the tokens cannot be told apart.
- seconds/...: time spent generating (compilation included), embedding and
  training the detector.
"""
import time
from typing import Mapping, Sequence

import numpy as np

from soundlm import generate as generate_lib
from soundlm.evaluation import detector as detector_lib
from soundlm.evaluation import speaker as speaker_lib
from soundlm.io import corpus
from soundlm.io.audio import resample

MIN_PROMPTS = 3  # the detector trains on 2 prompts' continuations and holds out 1


def _acoustic_generators(pipeline, acoustic: Sequence[str] | None) -> list[str]:
  available = [a for a in generate_lib.ACOUSTIC_GENERATORS
               if a != "soundstorm" or pipeline.soundstorm is not None]
  if acoustic is None:
    return available
  missing = [a for a in acoustic if a not in available]
  if missing:
    raise ValueError(f"acoustic generators {missing} are not in the pipeline "
                     f"(it has {available})")
  return list(acoustic)


def _same_speaker_references(clips, split: str, root) -> list:
  """For each clip, another clip of its speaker (its own split first, then the
  others), or None when the corpus has none."""
  by_speaker = {}
  for other_split in [split] + [s for s in corpus.SPLITS if s != split]:
    loaded = clips if other_split == split else corpus.load_builtin(other_split, "speech",
                                                                    root=root)
    for clip in loaded:
      by_speaker.setdefault(clip.speaker, []).append(clip)
  return [next((o for o in by_speaker[c.speaker] if o.id != c.id), None) for c in clips]


def evaluate_generation(pipeline: "generate_lib.Pipeline | Mapping[str, str]", *,
                        prompt_seconds: float = 1.0, duration: float = 3.0,
                        acoustic: Sequence[str] | None = None, split: str = "validation",
                        corpus_root=None, max_prompts: int | None = None,
                        samples_per_prompt: int = 1, seed: int = 0,
                        encoder: speaker_lib.VoiceEncoder | None = None,
                        detector_config: detector_lib.DetectorConfig | None = None) -> dict:
  """A flat dict of figures (JSON-able) for continuations of built-in speech.

  pipeline: a `soundlm.generate.Pipeline`, or the keyword arguments of
  `load_pipeline` (its work dirs). Clips of `split` at least `duration` long
  give the prompts (`max_prompts` of them at most); each prompt is continued
  `samples_per_prompt` times with every generator in `acoustic` (default: all
  the pipeline has). `encoder` defaults to the installed Resemblyzer weights;
  `detector_config` to 1 s windows (or the whole continuation if shorter).
  """
  start = time.time()
  if isinstance(pipeline, Mapping):
    pipeline = generate_lib.load_pipeline(**pipeline)
  generators = _acoustic_generators(pipeline, acoustic)
  if samples_per_prompt < 1:
    raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
  rate = pipeline.sample_rate
  total = round(duration * rate)
  used = int(prompt_seconds * rate) // pipeline.samples_per_semantic * pipeline.samples_per_semantic
  if used < 1 or used >= total:
    raise ValueError(f"prompt_seconds={prompt_seconds} must hold at least one semantic frame "
                     f"({pipeline.samples_per_semantic / rate:g} s) and be shorter than "
                     f"duration={duration}")
  clips, wavs = [], []
  for clip in corpus.load_builtin(split, "speech", root=corpus_root):
    wav = resample(clip.waveform, clip.sample_rate, rate)
    if wav.size >= total and len(clips) != max_prompts:
      clips.append(clip)
      wavs.append(wav[:total])
  if len(clips) < MIN_PROMPTS:
    raise ValueError(f"{len(clips)} {split} speech clips of {duration} s or more (max_prompts="
                     f"{max_prompts}); the evaluation needs at least {MIN_PROMPTS}: a shorter "
                     "duration or a larger corpus (corpus_root)")
  wavs = np.stack(wavs)
  prompts, real = wavs[:, :used], wavs[:, used:]
  figures = {"prompts": len(clips), "samples_per_prompt": samples_per_prompt,
             "prompt_seconds": used / rate, "continuation_seconds": (total - used) / rate}

  generated = {}
  for name in generators:
    tick = time.time()
    audio = pipeline.generate(np.repeat(prompts, samples_per_prompt, axis=0), duration,
                              rng=seed, acoustic=name)
    generated[name] = np.asarray(audio)[:, used:total]
    figures[f"seconds/generate_{name}"] = time.time() - tick

  tick = time.time()
  figures |= _speaker_figures(encoder or speaker_lib.VoiceEncoder.load(), clips, prompts, real,
                              generated, rate, split, corpus_root, samples_per_prompt, seed)
  figures["seconds/speaker"] = time.time() - tick

  tick = time.time()
  codec = pipeline.codec
  real_codes = np.asarray(codec.encode(real))
  groups = list(range(len(clips)))
  config = detector_config or detector_lib.DetectorConfig(
      window_frames=min(round(codec.frame_rate), real_codes.shape[1]))
  for name, audio in generated.items():
    result = detector_lib.evaluate(
        list(real_codes), list(np.asarray(codec.encode(audio))),
        codebook_size=codec.codebook_size, real_groups=groups,
        generated_groups=list(np.repeat(groups, samples_per_prompt)), config=config)
    figures |= {f"detector/{name}/{key}": value for key, value in result.items()}
  figures["seconds/detector"] = time.time() - tick
  figures["seconds/total"] = time.time() - start
  return figures


def _speaker_figures(encoder, clips, prompts, real, generated, rate, split, root,
                     samples_per_prompt, seed) -> dict:
  """Mean prompt-vs-continuation similarities, and the baselines'."""
  references = _same_speaker_references(clips, split, root)
  with_reference = [i for i, r in enumerate(references) if r is not None]
  length = real.shape[1]
  # Another clip of the speaker, cut as long as a continuation (from its start
  # after the prompt length when it is long enough, else from its start).
  other = []
  for i in with_reference:
    wav = resample(references[i].waveform, references[i].sample_rate, rate)
    offset = prompts.shape[1] if wav.size >= prompts.shape[1] + length else 0
    other.append(wav[offset:offset + length])
  noise_rng = np.random.default_rng(seed)
  noise = [noise_rng.standard_normal(length).astype(np.float32) * max(w.std(), 1e-3)
           for w in real]
  inputs = [list(prompts), list(real), other, noise] + [list(g) for g in generated.values()]
  sizes = [len(x) for x in inputs]
  embedded = np.split(encoder.embed_utterances([w for x in inputs for w in x], rate),
                      np.cumsum(sizes)[:-1])
  prompt, real_e, other_e, noise_e = embedded[:4]
  speakers = np.array([c.speaker for c in clips])
  different = speakers[:, None] != speakers[None, :]
  if not different.any():
    raise ValueError(f"every {split} prompt has the same speaker; the different-speaker "
                     "baseline needs two")
  figures = {
      "speaker/real_continuation": float(np.mean(np.sum(prompt * real_e, -1))),
      "speaker/different_speaker": float((prompt @ real_e.T)[different].mean()),
      "speaker/noise": float(np.mean(np.sum(prompt * noise_e, -1))),
      "speaker/same_speaker_prompts": len(with_reference),
  }
  if with_reference:
    figures["speaker/same_speaker_other_clip"] = float(
        np.mean(np.sum(prompt[with_reference] * other_e, -1)))
  for name, gen in zip(generated, embedded[4:]):
    figures[f"speaker/{name}"] = float(np.mean(np.sum(
        np.repeat(prompt, samples_per_prompt, axis=0) * gen, -1)))
  return figures
