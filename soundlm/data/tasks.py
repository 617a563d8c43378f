"""seqio Tasks and Mixtures per corpus and per model, and their gin factories.

Each factory registers its tasks (replacing earlier ones of the same name)
and returns a `TaskSpec`: the task or mixture name, its feature lengths and
the feature converter that makes the model's batch features. `TaskData`
(`soundlm.data.pipeline`) turns a TaskSpec into the trainer's iterator:

    train.data = @soundlm.data.TaskData()
    soundlm.data.TaskData.task = @soundlm.data.audiolm_task()
    soundlm.data.audiolm_task.stage = 'coarse'
    soundlm.data.audiolm_task.tokens = {'speech': '/data/tokens/speech'}

Task names are `soundlm.<corpus>.<model>` (e.g. `soundlm.speech.codec`,
`soundlm.piano.audiolm_fine`); several corpora make a mixture
`soundlm.<corpus>+<corpus>.<model>` sampled at `rates` (equal by default).
Waveform corpora are TFDS sources (`sources.audio_builder`: 'builtin:speech',
'folder:/path', 'tfds:<name>'); `folder:` corpora are built at the task's
`sample_rate` with its `folder_options`, `tfds:` corpora name their splits
through `splits` (`sources.TFDS_SPLITS` for LibriSpeech and LibriTTS). Token
corpora are token shard folders made by `python -m soundlm.data.tokenize`.
"""
import dataclasses
import functools
import os
from typing import Any, Mapping

import gin

from soundlm.data import feature_converters, preprocessors
from soundlm.io import shards, sources, tf_env

BUILTIN = {"speech": "builtin:speech", "piano": "builtin:piano"}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A registered seqio task or mixture and how to make model batches from it."""
  name: str
  feature_lengths: Mapping[str, int]
  converter: str  # feature_converters.converter kind
  converter_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def make_converter(self):
    return feature_converters.converter(self.converter, **self.converter_kwargs)


@gin.configurable(module="soundlm.data")
def shuffle_buffer_size(examples: int = 1000) -> int:
  """Examples in each task's shuffle buffer (after preprocessing)."""
  return examples


_SETTINGS = {}  # task name -> the settings it was registered with


def _register_task(name: str, settings: tuple, make_source, preprocessors_, output_features):
  """Registers `name` once per process; the same name with other settings is refused,
  since it would change the task under a running iterator at its next epoch."""
  if name in _SETTINGS:
    if _SETTINGS[name] != settings:
      raise ValueError(f"task {name} is already registered with {_SETTINGS[name]}, not "
                       f"{settings}; give the corpus another name")
    return
  tf_env.seqio().TaskRegistry.add(name, source=make_source(), preprocessors=preprocessors_,
                                  output_features=output_features,
                                  shuffle_buffer_size=shuffle_buffer_size())
  _SETTINGS[name] = settings


def _register_all(model: str, corpora: Mapping[str, Any], make_task, rates) -> str:
  """Registers `soundlm.<corpus>.<model>` for each corpus; a mixture if several."""
  seqio = tf_env.seqio()
  if not corpora:
    raise ValueError(f"corpora: at least one corpus is needed for the {model} task")
  names = []
  for corpus, where in sorted(corpora.items()):
    names.append(f"soundlm.{corpus}.{model}")
    make_task(names[-1], where)
  if len(names) == 1:
    return names[0]
  rates = dict(rates or {c: 1.0 for c in corpora})
  if set(rates) != set(corpora):
    raise ValueError(f"rates: expected a rate for each corpus {sorted(corpora)}, "
                     f"got {sorted(rates)}")
  mixture = f"soundlm.{'+'.join(sorted(corpora))}.{model}"
  components = tuple((f"soundlm.{c}.{model}", float(rates[c])) for c in sorted(corpora))
  if mixture in _SETTINGS and _SETTINGS[mixture] != components:
    raise ValueError(f"mixture {mixture} is already registered with rates {_SETTINGS[mixture]}, "
                     f"not {components}")
  if mixture not in _SETTINGS:
    seqio.MixtureRegistry.add(mixture, list(components))
    _SETTINGS[mixture] = components
  return mixture


def _feature(dtype: str, rank: int = 1, vocab_size: int = 0):
  seqio = tf_env.seqio()
  tf = tf_env.tf()
  return seqio.Feature(seqio.PassThroughVocabulary(vocab_size), add_eos=False,
                       dtype=getattr(tf, dtype), rank=rank)


def waveform_spec(model: str, corpora, rates, crop_seconds: float, sample_rate: int,
                  data_dir, model_key: str, folder_options=None, splits=None,
                  short_clips: str = "error") -> TaskSpec:
  """Random waveform crops for codec or w2v-BERT training.

  folder_options: `folder.FolderSettings` fields (besides root and sample_rate)
  for every `folder:` corpus; splits: {corpus: {split: 'tfds_split+...'}} for
  `tfds:` corpora; short_clips: `preprocessors.crop_waveform`."""
  if isinstance(corpora, str):
    corpora = [corpora]
  if not isinstance(corpora, Mapping):
    corpora = {c: BUILTIN.get(c, c) for c in corpora}
  if crop_seconds <= 0:
    raise ValueError(f"crop_seconds: expected > 0, got {crop_seconds}")
  folder_options = dict(folder_options or {})
  fixed = sorted({"root", "sample_rate"} & set(folder_options))
  if fixed:
    raise ValueError(f"folder_options: {fixed} come from the corpus and the task's "
                     "sample_rate, not from folder_options")
  splits = dict(splits or {})
  unknown = sorted(set(splits) - set(corpora))
  if unknown:
    raise ValueError(f"splits: {unknown} are not among the corpora {sorted(corpora)}")
  crop = functools.partial(preprocessors.crop_waveform,
                           short_clips=preprocessors.check_short_clips(short_clips))

  def make_task(name, where):
    corpus = name[len("soundlm."):-len(f".{model}")]
    options = folder_options if where.startswith("folder:") else {}
    builder = sources.audio_builder(where, data_dir, sample_rate=sample_rate, **options)
    rate = builder.info.features[sources.audio_feature(builder)].sample_rate
    if rate != sample_rate:
      raise ValueError(f"{name}: the corpus {where!r} has audio at {rate} Hz, the model "
                       f"expects sample_rate={sample_rate}")
    split_map = splits.get(corpus)
    _register_task(name, (where, data_dir, sample_rate, options, split_map, short_clips),
                   lambda: sources.waveform_source(builder, split_map), [crop],
                   {"wav": _feature("float32")})

  name = _register_all(model, corpora, make_task, rates)
  return TaskSpec(name, {"wav": round(crop_seconds * sample_rate)}, "wav",
                  {"model_key": model_key})


@gin.configurable(module="soundlm.data")
def codec_task(corpora=("speech",), rates=None, crop_seconds: float = 1.0,
               sample_rate: int = 16000, data_dir=None, folder_options=None, splits=None,
               short_clips: str = "error") -> TaskSpec:
  """SoundStream training crops: {'waveform': float32 [crop_seconds * sample_rate]}."""
  return waveform_spec("codec", corpora, rates, crop_seconds, sample_rate, data_dir,
                       "waveform", folder_options, splits, short_clips)


@gin.configurable(module="soundlm.data")
def w2vbert_task(corpora=("speech",), rates=None, crop_seconds: float = 8.0,
                 sample_rate: int = 16000, data_dir=None, folder_options=None, splits=None,
                 short_clips: str = "error") -> TaskSpec:
  """w2v-BERT pre-training crops: {'wav': float32 [crop_seconds * sample_rate]}."""
  return waveform_spec("w2vbert", corpora, rates, crop_seconds, sample_rate, data_dir, "wav",
                       folder_options, splits, short_clips)


def _token_corpora(tokens) -> dict:
  """{corpus name: shard folder}; a single folder is named after its last component."""
  if isinstance(tokens, str):
    return {os.path.basename(os.path.normpath(tokens)): tokens}
  return dict(tokens)


@gin.configurable(module="soundlm.data")
def audiolm_task(stage: str = gin.REQUIRED, tokens=gin.REQUIRED, layout=None,
                 rates=None) -> TaskSpec:
  """AudioLM stage `stage` on token shards: {'tokens': int32 [layout.sequence_length()]}.

  Crops follow the layout (the paper's 30/10/3 s unless `crop_seconds` is set);
  the shards must match its vocabularies, levels and frame rates."""
  from soundlm.audiolm import layouts

  layout = layout or layouts.Layout(stage)
  if layout.stage != stage:
    raise ValueError(f"layout: a {layout.stage!r} layout for the {stage!r} stage")
  levels = {"semantic": 0, "coarse": layout.num_coarse_levels, "fine": layout.num_levels}[stage]

  def make_task(name, directory):
    shards.spec_of(shards.read_manifest(directory)).check_compatible(
        **layout.token_needs(), where=f"token shards {directory}")
    if stage == "fine":
      crop = functools.partial(preprocessors.crop_codes, frames=layout.crop_acoustic_frames,
                               num_levels=levels)
    else:
      crop = functools.partial(preprocessors.crop_aligned_tokens,
                               semantic_frames=layout.crop_semantic_frames,
                               frames_per_semantic=layout.frames_per_semantic,
                               num_levels=levels)
    _register_task(name, (directory, layout), lambda: sources.token_source(directory),
                   [crop, functools.partial(preprocessors.layout_sequence, layout=layout)],
                   {"tokens": _feature("int32", vocab_size=layout.vocab_size)})

  name = _register_all(f"audiolm_{stage}", _token_corpora(tokens), make_task, rates)
  return TaskSpec(name, {"tokens": layout.sequence_length()}, "tokens")


@gin.configurable(module="soundlm.data")
def soundstorm_task(tokens=gin.REQUIRED, num_levels: int = 12, codebook_size: int = 1024,
                    semantic_vocab: int = 1024, crop_seconds: float = 30.0,
                    rates=None, frames_per_semantic: int | None = None) -> TaskSpec:
  """SoundStorm windows: {'semantic': [S], 'codes': [r * S, num_levels], 'padding_mask': [r * S]}
  with S = crop_seconds * semantic frame rate. `frames_per_semantic` (the
  model's frames_per_semantic_token), when given, must be the shards' ratio r."""
  corpora = _token_corpora(tokens)
  specs = {c: shards.spec_of(shards.read_manifest(d)) for c, d in corpora.items()}
  for corpus, spec in specs.items():
    spec.check_compatible(num_levels=num_levels, codebook_size=codebook_size,
                          semantic_vocab=semantic_vocab, frames_per_semantic=frames_per_semantic,
                          where=f"token shards {corpora[corpus]}")
  rates_seen = {(s.semantic_frame_rate, s.frames_per_semantic) for s in specs.values()}
  if len(rates_seen) != 1:
    raise ValueError(f"tokens: the corpora have different frame rates {sorted(rates_seen)}")
  semantic_rate, r = rates_seen.pop()
  frames = crop_seconds * semantic_rate
  if frames != int(frames) or frames < 1:
    raise ValueError(f"crop_seconds: {crop_seconds} s is not a whole number of semantic "
                     f"frames at {semantic_rate} Hz")
  frames = int(frames)

  def make_task(name, directory):
    crop = functools.partial(preprocessors.crop_aligned_tokens, semantic_frames=frames,
                             frames_per_semantic=r, num_levels=num_levels)
    _register_task(name, (directory, num_levels, frames, r),
                   lambda: sources.token_source(directory), [crop],
                   {"semantic": _feature("int32", vocab_size=semantic_vocab),
                    "codes": _feature("int32", rank=2, vocab_size=codebook_size)})

  name = _register_all("soundstorm", corpora, make_task, rates)
  return TaskSpec(name, {"semantic": frames, "codes": frames * r}, "soundstorm")
