"""seqio data sources: audio from TFDS builders, tokens from token shards.

Both shard by files across hosts when there are at least as many files as
hosts, else by examples (every host reads all files and keeps every H-th
example), so any corpus works on any number of hosts.
"""
import functools

from soundlm.data import folder, shards, tf_env


def audio_builder(source: str, data_dir: str | None = None, **folder_settings):
  """'builtin:speech', 'folder:/path/to/audio' or 'tfds:librispeech/clean100' ->
  the prepared TFDS builder (built on first use). `folder_settings`
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


def waveform_source(builder):
  """Examples {'wav': float32 [N], 'speaker', 'text'} of a TFDS audio builder.

  Reads the builder's record files directly, so sharding and order are ours."""
  tf = tf_env.tf()
  features = builder.info.features
  splits = builder.info.splits
  files = {s: [str(p) for p in splits[s].filepaths] for s in splits}

  def read(record):
    ex = features.deserialize_example(record)
    speaker = ex.get("speaker", ex.get("speaker_id", ""))
    if speaker.dtype != tf.string:
      speaker = tf.strings.as_string(speaker)
    return {"wav": folder.to_float(ex["audio"]), "speaker": speaker,
            "text": ex.get("text", tf.constant(""))}

  return _source_class()(files, {s: splits[s].num_examples for s in splits}, read)


def token_source(directory: str):
  """Parsed token records (`shards.parse_fn`) of a token shard folder."""
  manifest = shards.read_manifest(directory)
  files = {s: shards.shard_files(directory, s) for s in manifest["splits"]}
  num = {s: manifest["splits"][s]["num_examples"] for s in files}
  return _source_class()(files, num, shards.parse_fn())
