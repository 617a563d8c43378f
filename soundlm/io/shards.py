"""Token shards: TFRecord files of tokenized clips, plus a JSON manifest.

One record per clip (tf.train.Example):
  id, speaker, text      bytes
  duration               float, seconds of audio that the tokens cover
  semantic               int64 [S]       semantic tokens (S frames at the semantic rate)
  codes                  int64 [T * Q]   acoustic codes, frame-major; T = r * S
  num_frames, num_levels int64           T and Q

`manifest.json` records the `TokenSpace` (rates, levels, vocabularies) that
produced the shards, so a task can refuse shards that do not fit its model,
and the shard list with example counts and skipped inputs. Files go through
`tf.io.gfile`, so shard folders may live on cloud storage.
"""
import dataclasses
import json

import numpy as np

from soundlm.io import tf_env
from soundlm.io.token_space import TokenSpace

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def join(*parts) -> str:
  return "/".join(str(p).rstrip("/") for p in parts)


def serialize(example: dict) -> bytes:
  """{'id', 'speaker', 'text', 'duration', 'semantic' [S], 'codes' [T, Q]} -> bytes."""
  tf = tf_env.tf()
  codes = np.asarray(example["codes"])
  b = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))  # noqa: E731
  ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
  feature = {
      "id": b(example["id"]), "speaker": b(example["speaker"]), "text": b(example["text"]),
      "duration": tf.train.Feature(float_list=tf.train.FloatList(value=[example["duration"]])),
      "semantic": ints(np.asarray(example["semantic"]).ravel()),
      "codes": ints(codes.ravel()),
      "num_frames": ints([codes.shape[0]]), "num_levels": ints([codes.shape[1]]),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_fn():
  """A tf function: serialized record -> {'id', 'speaker', 'text', 'duration',
  'semantic' int32 [S], 'codes' int32 [T, Q]}."""
  tf = tf_env.tf()
  spec = {
      "id": tf.io.FixedLenFeature([], tf.string), "speaker": tf.io.FixedLenFeature([], tf.string),
      "text": tf.io.FixedLenFeature([], tf.string),
      "duration": tf.io.FixedLenFeature([], tf.float32),
      "semantic": tf.io.VarLenFeature(tf.int64), "codes": tf.io.VarLenFeature(tf.int64),
      "num_frames": tf.io.FixedLenFeature([], tf.int64),
      "num_levels": tf.io.FixedLenFeature([], tf.int64),
  }

  def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    codes = tf.reshape(tf.cast(tf.sparse.to_dense(ex.pop("codes")), tf.int32),
                       tf.stack([ex["num_frames"], ex["num_levels"]]))
    return {"id": ex["id"], "speaker": ex["speaker"], "text": ex["text"],
            "duration": ex["duration"],
            "semantic": tf.cast(tf.sparse.to_dense(ex["semantic"]), tf.int32), "codes": codes}
  return parse


def write_atomic(path: str, data: bytes | str, tmp_suffix: str = ".tmp"):
  """Writes to `path + tmp_suffix` then renames, so a reader never sees half a
  file; writers that may race on one path each take their own suffix."""
  gfile = tf_env.tf().io.gfile
  with gfile.GFile(path + tmp_suffix, "wb") as f:
    f.write(data.encode() if isinstance(data, str) else data)
  gfile.rename(path + tmp_suffix, path, overwrite=True)


def write_records_atomic(path: str, records):
  tf = tf_env.tf()
  with tf.io.TFRecordWriter(path + ".tmp") as writer:
    for record in records:
      writer.write(record)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def read_json(path: str) -> dict:
  with tf_env.tf().io.gfile.GFile(path) as f:
    return json.load(f)


def read_manifest(directory: str) -> dict:
  path = join(directory, MANIFEST)
  if not tf_env.tf().io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no token manifest; run python -m soundlm.data.tokenize "
                            "first (or let an interrupted job finish)")
  manifest = read_json(path)
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: token shard format {manifest.get('format_version')}, "
                     f"expected {FORMAT_VERSION}")
  return manifest


def spec_of(manifest: dict) -> TokenSpace:
  return TokenSpace(**manifest["spec"])


def shard_files(directory: str, split: str) -> list[str]:
  """The split's shard paths in order, from the manifest."""
  manifest = read_manifest(directory)
  if split not in manifest["splits"]:
    raise ValueError(f"split: {split!r} not among the tokenized splits "
                     f"{sorted(manifest['splits'])} in {directory}")
  return [join(directory, s["file"]) for s in manifest["splits"][split]["shards"]]


def summary_path(directory: str, split: str, index: int, count: int) -> str:
  """A shard's summary; it is written last, so its presence marks the shard done."""
  return join(directory, shard_name(split, index, count)) + ".json"


def write_shard(directory: str, split: str, index: int, count: int, examples: list[dict],
                seconds: float, skipped: list):
  """Writes shard `index` of `count` and then its summary, each atomically."""
  name = shard_name(split, index, count)
  tf_env.tf().io.gfile.makedirs(directory)
  write_records_atomic(join(directory, name), [serialize(ex) for ex in examples])
  summary = {"file": name, "num_examples": len(examples), "seconds": round(seconds, 3),
             "skipped": skipped}
  write_atomic(summary_path(directory, split, index, count),
               json.dumps(summary, indent=1, sort_keys=True))


def finalize(directory: str, split: str, count: int, spec: TokenSpace, source: str,
             host: int = 0) -> dict:
  """Writes the manifest once every shard of `split` has its summary.

  Several hosts may finish at once and all write the same manifest, each
  through its own temporary file (`host`). Returns the manifest (with
  complete=True), or the count of finished shards."""
  gfile = tf_env.tf().io.gfile
  paths = [summary_path(directory, split, k, count) for k in range(count)]
  done = [gfile.exists(p) for p in paths]
  if not all(done):
    return {"complete": False, "done_shards": sum(done), "num_shards": count}
  summaries = [read_json(p) for p in paths]
  path = join(directory, MANIFEST)
  manifest = read_json(path) if gfile.exists(path) else {
      "format_version": FORMAT_VERSION, "spec": dataclasses.asdict(spec), "splits": {}}
  if manifest["spec"] != dataclasses.asdict(spec):
    raise ValueError(f"{path}: existing shards were made with {manifest['spec']}, this job "
                     f"makes {dataclasses.asdict(spec)}; write to another folder")
  manifest["splits"][split] = {
      "source": source, "num_shards": count,
      "num_examples": sum(s["num_examples"] for s in summaries),
      "seconds": round(sum(s["seconds"] for s in summaries), 3),
      "skipped": [x for s in summaries for x in s["skipped"]],
      "shards": [{k: s[k] for k in ("file", "num_examples", "seconds")} for s in summaries]}
  write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True), f".{host}.tmp")
  return dict(manifest, complete=True)


def write_random(directory: str, spec: TokenSpace, split: str, num_examples: int,
                 seconds: tuple[float, float] = (2.0, 6.0), examples_per_shard: int = 64,
                 seed: int = 0) -> dict:
  """Shards of uniformly random tokens of `spec` (clip lengths uniform in `seconds`):
  input-pipeline tests and benchmarks that must not wait for a tokenization run."""
  rng = np.random.default_rng(seed)
  count = max(1, -(-num_examples // examples_per_shard))
  for k in range(count):
    examples, total = [], 0.0
    for i in range(k * examples_per_shard, min((k + 1) * examples_per_shard, num_examples)):
      s = max(1, int(rng.uniform(*seconds) * spec.semantic_frame_rate))
      t = s * spec.frames_per_semantic
      total += t / spec.codec_frame_rate
      examples.append({"id": f"{split}/{i}", "speaker": f"speaker{i % 4}", "text": "",
                       "duration": t / spec.codec_frame_rate,
                       "semantic": rng.integers(0, spec.semantic_vocab, s),
                       "codes": rng.integers(0, spec.codebook_size, (t, spec.num_levels))})
    write_shard(directory, split, k, count, examples, total, [])
  return finalize(directory, split, count, spec, "random")
