"""seqio data sources: audio from TFDS builders, tokens from token shards.

Both shard by files across hosts when there are at least as many files as
hosts, else by examples (every host reads all files and keeps every H-th
example), so any corpus works on any number of hosts.
"""
import functools
from typing import Iterator, Mapping

import numpy as np

from soundlm.io import corpus, folder, shards, tf_env

# soundlm split name -> TFDS split expression, for TFDS datasets that have no
# 'train' / 'validation' splits; a task's `splits` argument overrides these.
TFDS_SPLITS = {
    name: {"train": "train_clean100+train_clean360+train_other500", "validation": "dev_clean"}
    for name in ("librispeech", "libritts")}


def audio_builder(source: str, data_dir: str | None = None, **folder_settings):
  """'builtin:speech', 'folder:/path/to/audio' or 'tfds:librispeech' -> the
  prepared TFDS builder (built on first use). `folder_settings`
  (`folder.FolderSettings` fields) apply to folder sources only."""
  kind, _, name = source.partition(":")
  if kind == "builtin":
    return folder.prepared(folder.builtin_builder(name, data_dir=data_dir))
  if kind == "folder":
    return folder.prepared(folder.folder_builder(name, data_dir=data_dir, **folder_settings))
  if kind == "tfds":
    return folder.prepared(tf_env.tfds().builder(name, data_dir=data_dir))
  raise ValueError(f"source: expected builtin:<kind>, folder:<path> or tfds:<name>, "
                   f"got {source!r}")


def audio_feature(builder) -> str:
  """The name of the builder's one mono Audio feature: 'audio' for soundlm's
  builders, 'speech' for TFDS's librispeech and libritts."""
  tfds = tf_env.tfds()
  features = builder.info.features
  names = [k for k, f in features.items() if isinstance(f, tfds.features.Audio)]
  if len(names) != 1:
    raise ValueError(f"{builder.info.full_name}: expected exactly one Audio feature, found "
                     f"{len(names)} ({names}) among its features {sorted(features)}")
  feature = features[names[0]]
  if getattr(feature, "_lazy_decode", False):
    raise ValueError(f"{builder.info.full_name}: the Audio feature {names[0]!r} is stored "
                     "undecoded (lazy_decode); use a config that decodes it")
  if len(feature.shape) > 1 and feature.shape[1] != 1:
    raise ValueError(f"{builder.info.full_name}: the Audio feature {names[0]!r} has shape "
                     f"{feature.shape}; soundlm reads mono audio")
  return names[0]


def split_names(builder, splits: Mapping[str, str] | None = None) -> dict[str, list[str]]:
  """{soundlm split: [builder splits]}: the builder's own splits, plus `splits`
  (or the `TFDS_SPLITS` entry of the dataset), whose values are TFDS split
  names joined by '+' ('train_clean100+train_clean360')."""
  available = set(builder.info.splits)
  names = {s: [s] for s in available}
  mapping = TFDS_SPLITS.get(builder.name, {}) if splits is None else splits
  for ours, theirs in mapping.items():
    parts = theirs.split("+")
    unknown = sorted(set(parts) - available)
    if unknown:
      raise ValueError(f"{builder.info.full_name}: split {ours!r} = {theirs!r} names "
                       f"{unknown}, not among its splits {sorted(available)}")
    names[ours] = parts
  return names


def waveforms(source: str, split: str, *, data_dir: str | None = None,
              sample_rate: int = 16000, **folder_settings) -> Iterator[np.ndarray]:
  """float32 waveforms [N] of one split of an audio source, in a fixed order.

  'builtin:<kind>' and 'folder:<path>' files are read directly (no TensorFlow,
  nothing built); 'tfds:<name>' goes through TFDS (`split_names` apply)."""
  kind, _, name = source.partition(":")
  if kind in ("builtin", "folder"):
    if kind == "builtin":
      if name not in corpus.KINDS:
        raise ValueError(f"source: expected builtin:<kind> with a kind in {corpus.KINDS}, "
                         f"got {source!r}")
      name = str(corpus.builtin_root() / name)
    settings = folder.FolderSettings(name, sample_rate=sample_rate,
                                     **{**folder_settings, "audio_dtype": "float32"})
    files = folder.split_files(settings)
    if split not in files:
      raise ValueError(f"split: {source} has splits {sorted(files)}, not {split!r}")
    return (folder.read_example(settings, f)["audio"] for f in files[split])
  builder = audio_builder(source, data_dir)
  key = audio_feature(builder)
  rate = builder.info.features[key].sample_rate
  if rate != sample_rate:
    raise ValueError(f"{source}: audio at {rate} Hz, expected {sample_rate} Hz")
  parts = split_names(builder).get(split)
  if parts is None:
    raise ValueError(f"split: {source} has splits {sorted(split_names(builder))}, "
                     f"not {split!r}")
  ds = builder.as_dataset(split="+".join(parts), shuffle_files=False)
  return (folder.to_float(ex[key]) for ex in ds.as_numpy_iterator())


def _shard(files_ds, num_files, shard_info):
  """(files dataset, example-level shard args or None)."""
  if shard_info is None or shard_info.num_shards == 1:
    return files_ds, None
  if num_files >= shard_info.num_shards:
    return files_ds.shard(shard_info.num_shards, shard_info.index), None
  return files_ds, (shard_info.num_shards, shard_info.index)


@functools.cache
def _source_class():
  seqio = tf_env.seqio()
  tf = tf_env.tf()

  class RecordFilesSource(seqio.DataSource):
    """Records of per-split file lists, read in a deterministic interleaved order."""

    def __init__(self, files: dict, num_examples: dict, read_fn):
      self._files, self._read_fn = files, read_fn
      super().__init__(splits=tuple(files), num_input_examples=num_examples)

    @property
    def supports_arbitrary_sharding(self) -> bool:
      return True

    def list_shards(self, split):
      return self._files[split]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, *,
                    sequence_length=None, use_cached=False, num_epochs=1):
      del sequence_length, use_cached, num_epochs
      files = self._files[split]
      ds, example_shard = _shard(tf.data.Dataset.from_tensor_slices(files), len(files),
                                 shard_info)
      if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
      ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      if example_shard:
        ds = ds.shard(*example_shard)
      return ds.map(self._read_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return RecordFilesSource


def waveform_source(builder, splits: Mapping[str, str] | None = None):
  """Examples {'wav': float32 [N], 'id', 'speaker', 'text'} of a TFDS audio builder,
  whose splits are `split_names(builder, splits)`.

  Reads the builder's record files directly, so sharding and order are ours."""
  tf = tf_env.tf()
  features = builder.info.features
  key = audio_feature(builder)
  info = builder.info.splits
  names = split_names(builder, splits)
  files = {s: [str(p) for part in parts for p in info[part].filepaths]
           for s, parts in names.items()}
  num_examples = {s: sum(info[part].num_examples for part in parts)
                  for s, parts in names.items()}

  def as_string(value):
    return value if value.dtype == tf.string else tf.strings.as_string(value)

  def read(record):
    ex = features.deserialize_example(record)
    empty = tf.constant("")
    return {"wav": folder.to_float(ex[key]), "id": as_string(ex.get("id", empty)),
            "speaker": as_string(ex.get("speaker", ex.get("speaker_id", empty))),
            "text": as_string(ex.get("text", empty))}

  return _source_class()(files, num_examples, read)


def token_source(directory: str):
  """Parsed token records (`shards.parse_fn`) of a token shard folder."""
  manifest = shards.read_manifest(directory)
  files = {s: shards.shard_files(directory, s) for s in manifest["splits"]}
  num = {s: manifest["splits"][s]["num_examples"] for s in files}
  return _source_class()(files, num, shards.parse_fn())
