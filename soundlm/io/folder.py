"""TFDS builders for folders of audio files, and the built-in corpus through them.

    from soundlm.io import folder
    builder = folder.folder_builder("/data/my_audio", data_dir="/tmp/tfds")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")   # {'audio', 'id', 'speaker', 'text', 'duration'}

A folder holds `.wav`/`.flac`/`.ogg` files at any depth. Beside `x.flac` an
optional `x.txt` holds its transcript and an optional `x.json` its metadata
(`speaker`, `text`); otherwise the speaker can be taken from a parent folder
name (`speaker_dir_level=1` for the parent, 2 for the grandparent as in
LibriSpeech's speaker/chapter/file layout). Splits: `train/` and
`validation/` sub-folders when present, else a fixed hash of each file's
relative path puts `validation_fraction` of the files in validation.

Every file must have `sample_rate` and one channel unless `allow_resample` /
`allow_downmix` say otherwise, and last at least `min_seconds` (0: any length,
for crops of a fixed length). A file that cannot be used raises
`AudioFileError`, or with `on_error='skip'` is left out, logged, and listed
with its reason in the dataset's metadata (`skipped_files(builder)`).
"""
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re

import numpy as np

from soundlm.io import audio, corpus, tf_env

VERSION = "1.0.0"
SPLITS = ("train", "validation")
ON_ERROR = ("raise", "skip")
AUDIO_DTYPES = ("int16", "float32")


@dataclasses.dataclass(frozen=True)
class FolderSettings:
  """How the files of one folder become examples (see the module docstring)."""
  root: str
  sample_rate: int = 16000
  allow_resample: bool = False
  allow_downmix: bool = False
  validation_fraction: float = 0.1
  speaker_dir_level: int = 0
  on_error: str = "raise"
  audio_dtype: str = "int16"  # int16 halves the storage; float32 keeps any float audio
  min_seconds: float = 0.0

  def __post_init__(self):
    if self.on_error not in ON_ERROR:
      raise ValueError(f"on_error: expected one of {ON_ERROR}, got {self.on_error!r}")
    if self.audio_dtype not in AUDIO_DTYPES:
      raise ValueError(f"audio_dtype: expected one of {AUDIO_DTYPES}, got {self.audio_dtype!r}")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction: expected [0, 1), got {self.validation_fraction}")
    if self.sample_rate <= 0 or self.speaker_dir_level < 0 or self.min_seconds < 0:
      raise ValueError("sample_rate must be positive, speaker_dir_level and min_seconds "
                       f">= 0, got {self.sample_rate}, {self.speaker_dir_level}, "
                       f"{self.min_seconds}")

  def config_name(self) -> str:
    """A name unique to the folder's settings and content (every audio file's
    path, size and modification time), so builds never collide in a data_dir
    and a folder whose files change is built again rather than read stale."""
    slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(os.path.normpath(self.root)).lower())
    digest = hashlib.sha1(repr(dataclasses.astuple(self)).encode())
    for relpath in audio.list_audio_files(self.root):
      stat = os.stat(os.path.join(self.root, relpath))
      digest.update(f"{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{slug.strip('_') or 'audio'}_{digest.hexdigest()[:10]}"


def split_files(settings: FolderSettings) -> dict[str, list[str]]:
  """Relative audio paths of each split, in sorted order; an empty split is
  left out of the built dataset."""
  files = audio.list_audio_files(settings.root)
  if not files:
    raise ValueError(f"root: no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) under "
                     f"{settings.root!r}")
  by_dir = {s: [f for f in files if f.split(os.sep)[0] == s] for s in SPLITS}
  if all(by_dir.values()):
    return by_dir
  threshold = settings.validation_fraction * 2**32
  valid = [int(hashlib.sha1(f.encode()).hexdigest()[:8], 16) < threshold for f in files]
  return {"train": [f for f, v in zip(files, valid) if not v],
          "validation": [f for f, v in zip(files, valid) if v]}


def read_example(settings: FolderSettings, relpath: str) -> dict:
  """One file and its sidecars as a TFDS example (numpy audio in `audio_dtype`)."""
  path = os.path.join(settings.root, relpath)
  wav, _ = audio.read_audio(path, settings.sample_rate, allow_resample=settings.allow_resample,
                            allow_downmix=settings.allow_downmix)
  if wav.shape[0] < settings.min_seconds * settings.sample_rate:
    raise audio.AudioFileError(path, f"{wav.shape[0] / settings.sample_rate:.2f} s, shorter "
                                     f"than min_seconds={settings.min_seconds}")
  stem = os.path.splitext(path)[0]
  meta = {}
  if os.path.exists(stem + ".json"):
    with open(stem + ".json") as f:
      meta = json.load(f)
  text = meta.get("text", "")
  if os.path.exists(stem + ".txt"):
    with open(stem + ".txt") as f:
      text = f.read().strip()
  speaker = str(meta.get("speaker", ""))
  if not speaker and settings.speaker_dir_level:
    parts = relpath.split(os.sep)[:-1]
    if len(parts) < settings.speaker_dir_level:
      raise audio.AudioFileError(path, f"speaker_dir_level={settings.speaker_dir_level} but "
                                       f"the file is only {len(parts)} folders deep")
    speaker = parts[-settings.speaker_dir_level]
  if settings.audio_dtype == "int16":
    if np.max(np.abs(wav)) > 1.0:
      raise audio.AudioFileError(path, "samples outside [-1, 1] do not fit int16 storage; "
                                       "use audio_dtype='float32'")
    wav = np.round(wav * 32767.0).astype(np.int16)
  return {"audio": wav, "id": os.path.splitext(relpath)[0], "speaker": speaker, "text": text,
          "duration": np.float32(wav.shape[0] / settings.sample_rate)}


def to_float(audio_values):
  """Audio samples -> float32 in [-1, 1], of the input's kind: a numpy array for
  numpy input (`as_numpy_iterator` examples), a tf.Tensor for a tf.Tensor
  (inside tf.data). Integer samples are 16-bit PCM values (TFDS stores audio as
  int16 or int64); float samples are only cast."""
  if isinstance(audio_values, (np.ndarray, np.generic)):
    if audio_values.dtype.kind == "f":
      return audio_values.astype(np.float32, copy=False)
    return audio_values.astype(np.float32) / np.float32(32768.0)
  tf = tf_env.tf()
  values = tf.cast(audio_values, tf.float32)
  return values if audio_values.dtype.is_floating else values / 32768.0


@functools.cache
def _builder_classes():
  """Defines (once) and so registers the TFDS builders; needs TensorFlow."""
  tfds = tf_env.tfds()

  @dataclasses.dataclass(eq=False)
  class AudioFolderConfig(tfds.core.BuilderConfig):
    settings: FolderSettings = None

  class AudioFolder(tfds.core.GeneratorBasedBuilder):
    """Any folder of audio files (configured by `FolderSettings`)."""
    VERSION = tfds.core.Version(VERSION)
    # No checksums or metadata files live beside this code; None also keeps
    # TFDS from probing the module path (which needs `importlib_resources`).
    code_path = None

    def _info(self):
      s = self.builder_config.settings
      return self.dataset_info_from_configs(
          description=f"Audio files under {s.root}",
          features=tfds.features.FeaturesDict({
              "audio": tfds.features.Audio(shape=(None,), dtype=np.dtype(s.audio_dtype),
                                           sample_rate=s.sample_rate),
              "id": tfds.features.Text(),
              "speaker": tfds.features.Text(),
              "text": tfds.features.Text(),
              "duration": tfds.features.Scalar(np.float32),
          }),
          metadata=tfds.core.MetadataDict(skipped={}, settings=dataclasses.asdict(s)))

    def _split_generators(self, dl_manager):
      del dl_manager
      files = split_files(self.builder_config.settings)
      return {split: self._generate_examples(split, names)
              for split, names in files.items() if names}

    def _generate_examples(self, split, relpaths):
      s = self.builder_config.settings
      skipped = self.info.metadata["skipped"].setdefault(split, [])
      for relpath in relpaths:
        try:
          example = read_example(s, relpath)
        except audio.AudioFileError as e:
          if s.on_error == "raise":
            raise
          logging.warning("skipping %s", e)
          skipped.append([relpath, e.problem])
          continue
        yield relpath, example
      if skipped:
        logging.warning("%s: skipped %d of %d files (on_error='skip')", split, len(skipped),
                        len(relpaths))
      if len(skipped) == len(relpaths):  # TFDS cannot write an empty split
        raise ValueError(f"{s.root}: all {len(relpaths)} files of split {split!r} were "
                         f"skipped, e.g. {skipped[0][0]}: {skipped[0][1]}")

  builtin_configs = [
      AudioFolderConfig(name=kind, settings=FolderSettings(str(corpus.builtin_root() / kind)),
                        description=f"built-in {kind} corpus")
      for kind in corpus.KINDS]

  class SoundlmBuiltin(AudioFolder):
    """The corpus shipped in `soundlm/io/corpus/builtin` (speech and piano)."""
    BUILDER_CONFIGS = builtin_configs

  return AudioFolderConfig, AudioFolder, SoundlmBuiltin


def register():
  """Makes `tfds.builder('soundlm_builtin/speech')` and 'audio_folder' known to TFDS."""
  _builder_classes()


def folder_builder(root, *, data_dir=None, name: str | None = None, **settings):
  """A TFDS builder of the audio files under `root` (settings: `FolderSettings`)."""
  config_cls, folder_cls, _ = _builder_classes()
  s = FolderSettings(os.path.abspath(os.fspath(root)), **settings)
  if not os.path.isdir(s.root):  # before TFDS makes any folder for it
    raise ValueError(f"root: {s.root!r} is not a directory")
  config = config_cls(name=name or s.config_name(), settings=s,
                      description=f"audio files under {s.root}")
  return folder_cls(config=config, data_dir=data_dir)


def builtin_builder(kind: str = "speech", *, data_dir=None):
  """The TFDS builder of the built-in corpus ('speech' or 'piano')."""
  if kind not in corpus.KINDS:
    raise ValueError(f"kind: expected one of {corpus.KINDS}, got {kind!r}")
  return _builder_classes()[2](config=kind, data_dir=data_dir)


def prepared(builder):
  """`builder` after building its files (a no-op when they already exist)."""
  builder.download_and_prepare()
  return builder


def skipped_files(builder) -> dict[str, list]:
  """{split: [[relative path, reason], ...]} of the files left out by on_error='skip'."""
  return dict(builder.info.metadata.get("skipped", {}))
