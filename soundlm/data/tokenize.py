"""Offline tokenization: a TFDS split -> token shards (semantic tokens + codes).

    python -m soundlm.data.tokenize --source=builtin:speech --split=train \
        --out=/data/tokens/speech --codec=tiny --semantic=tiny

The split is cut into shards of `--examples_per_shard` consecutive examples;
host h of H tokenizes shards h, h + H, ... with its local devices (the batch
is sharded over them). A multi-host launch joins `jax.distributed` as training
does (H = jax.process_count()); `--host_index` with `--num_hosts` instead runs
the hosts as independent processes. Clips are grouped by length into buckets of
`--bucket_seconds` and padded to the bucket, so each bucket compiles once and
padding stays short. A shard is written to a temporary name and renamed when
complete, then its summary (`<shard>.json`) is written the same way; a
restarted job skips shards whose summary exists, so an interrupted job ends
with exactly the shards of an uninterrupted one. When every shard is done the
manifest is (re)written (in a jax.distributed job every host waits for the
others, then all write the same manifest). Clips that cannot be tokenized
(empty, shorter than one semantic frame, non-finite) raise, or with
`--on_error=skip` are left out and listed in the shard summary and the manifest.
"""
import argparse
import dataclasses
import math
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from soundlm import partitioning
from soundlm.codec.api import Codec
from soundlm.io import audio, folder, shards, sources, tf_env
from soundlm.io.token_space import TokenSpace
from soundlm.semantic.api import SemanticTokenizer


@dataclasses.dataclass(frozen=True)
class JobConfig:
  split: str = "train"
  num_levels: int | None = None  # None: all the codec's levels
  batch_size: int = 8
  examples_per_shard: int = 256
  bucket_seconds: float = 1.0
  on_error: str = "raise"
  allow_resample: bool = False
  allow_downmix: bool = False
  host_index: int | None = None  # None: jax.process_index()
  num_hosts: int | None = None  # None: jax.process_count()
  max_shards: int | None = None  # stop after this many shards (the rest on a later run)
  progress: bool = True


class ClipError(ValueError):
  """A clip that cannot be tokenized; the message names it."""


class Tokenizer:
  """Runs the codec and the semantic tokenizer on fixed-size padded batches (one
  compilation per bucket); the models split each batch over their mesh."""

  def __init__(self, codec, semantic, spec: TokenSpace, batch_size: int,
               bucket_seconds: float):
    self.codec, self.semantic, self.spec = codec, semantic, spec
    if batch_size < 1:
      raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    self.batch_size = batch_size
    self.semantic_hop = spec.sample_rate / spec.semantic_frame_rate  # codec-rate samples
    self.codec_hop = spec.sample_rate / spec.codec_frame_rate
    self.bucket = round(bucket_seconds * spec.sample_rate)
    for name, hop in (("semantic", self.semantic_hop), ("codec", self.codec_hop)):
      if hop != int(hop) or self.bucket % int(hop):
        raise ValueError(f"bucket_seconds: {bucket_seconds} s = {self.bucket} samples is not a "
                         f"whole number of {name} frames of {hop} samples")
    if (self.bucket * semantic.sample_rate) % spec.sample_rate:
      raise ValueError(f"bucket_seconds: {bucket_seconds} s is not a whole number of samples "
                       f"at the semantic tokenizer's {semantic.sample_rate} Hz")

  def check_clip(self, clip_id: str, wav: np.ndarray):
    if wav.size == 0:
      raise ClipError(f"{clip_id}: empty audio (0 samples)")
    if wav.size < self.semantic_hop:
      raise ClipError(f"{clip_id}: {wav.size} samples, shorter than one semantic frame "
                      f"({int(self.semantic_hop)} samples)")
    if not np.all(np.isfinite(wav)):
      raise ClipError(f"{clip_id}: audio contains NaN or infinite samples")

  def bucket_of(self, num_samples: int) -> int:
    return -(-num_samples // self.bucket) * self.bucket

  def tokenize(self, wavs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clips of one bucket (at most batch_size) -> [(semantic [S], codes [T, Q])]."""
    length = self.bucket_of(max(w.size for w in wavs))
    batch = np.zeros((self.batch_size, length), np.float32)
    for i, w in enumerate(wavs):
      batch[i, :w.size] = w
    codes = np.asarray(self.codec.encode(batch, num_levels=self.spec.num_levels))
    # Each clip is resampled alone and tokenized with its length, so its
    # semantic tokens do not depend on the padding.
    sem_rate = int(self.semantic.sample_rate)
    sem_wavs = [audio.resample(w, self.spec.sample_rate, sem_rate) for w in wavs]
    sem_batch = np.zeros((self.batch_size, length * sem_rate // self.spec.sample_rate),
                         np.float32)
    lengths = np.full(self.batch_size, sem_batch.shape[1])
    for i, w in enumerate(sem_wavs):
      sem_batch[i, :w.size], lengths[i] = w, w.size
    semantic = np.asarray(self.semantic.tokenize(sem_batch, lengths=lengths))
    r = self.spec.frames_per_semantic
    out = []
    for i, w in enumerate(wavs):
      s = int(w.size // self.semantic_hop)
      if codes.shape[1] < s * r or semantic.shape[1] < s or codes.shape[2] != self.spec.num_levels:
        raise RuntimeError(f"models returned codes {codes.shape} and semantic tokens "
                           f"{semantic.shape} for {length} samples; expected at least "
                           f"{s * r} frames of {self.spec.num_levels} levels and {s} tokens")
      out.append((semantic[i, :s].astype(np.int32), codes[i, :s * r].astype(np.int32)))
    return out


def _example_fields(ex: dict, key: str, index: int,
                    split: str) -> tuple[str, str, str, np.ndarray]:
  clip_id = ex.get("id", f"{split}/{index}")
  speaker = ex.get("speaker", ex.get("speaker_id", b""))
  decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
  return decode(clip_id), decode(speaker), decode(ex.get("text", b"")), folder.to_float(ex[key])


class Progress:
  def __init__(self, enabled: bool, total_shards: int):
    self.enabled, self.total, self.start = enabled, total_shards, time.time()
    self.examples, self.seconds = 0, 0.0

  def update(self, shard: int, done: int, examples: int, seconds: float):
    self.examples += examples
    self.seconds += seconds
    if self.enabled:
      elapsed = max(time.time() - self.start, 1e-9)
      print(f"\rshard {shard}: {done}/{self.total} shards of this host, {self.examples} clips, "
            f"{self.seconds:.0f} s audio, {self.seconds / elapsed:.1f}x real time",
            end="", file=sys.stderr, flush=True)

  def close(self):
    if self.enabled:
      print(file=sys.stderr)


def run(builder, out_dir: str, codec, semantic, config: JobConfig = JobConfig()) -> dict:
  """Tokenizes `config.split` of the TFDS `builder` into `out_dir`.

  Returns the manifest when all shards are done, else a summary of this run.
  """
  tf = tf_env.tf()
  if config.on_error not in ("raise", "skip"):
    raise ValueError(f"on_error: expected 'raise' or 'skip', got {config.on_error!r}")
  spec = TokenSpace.of(codec, semantic, config.num_levels)
  source_rate = builder.info.features[sources.audio_feature(builder)].sample_rate
  if source_rate != spec.sample_rate and not config.allow_resample:
    raise ValueError(f"{builder.info.full_name}: audio at {source_rate} Hz, the codec expects "
                     f"{spec.sample_rate} Hz; set allow_resample to resample")
  host = jax.process_index() if config.host_index is None else config.host_index
  hosts = jax.process_count() if config.num_hosts is None else config.num_hosts
  if not 0 <= host < hosts:
    raise ValueError(f"host_index: expected 0..{hosts - 1}, got {host}")
  if config.split not in builder.info.splits:
    raise ValueError(f"split: {builder.info.full_name} has splits "
                     f"{sorted(builder.info.splits)}, not {config.split!r}")
  num_examples = builder.info.splits[config.split].num_examples
  count = max(1, math.ceil(num_examples / config.examples_per_shard))
  tokenizer = Tokenizer(codec, semantic, spec, config.batch_size, config.bucket_seconds)
  tf.io.gfile.makedirs(out_dir)
  mine = [k for k in range(count) if k % hosts == host]
  todo = [k for k in mine
          if not tf.io.gfile.exists(shards.summary_path(out_dir, config.split, k, count))]
  progress = Progress(config.progress, len(mine))
  for n, k in enumerate(todo[:config.max_shards]):
    _tokenize_shard(builder, out_dir, k, count, tokenizer, source_rate, config, progress,
                    len(mine) - len(todo) + n + 1)
  progress.close()
  if config.host_index is None and hosts > 1:
    # One jax.distributed job: every host reports the finished manifest.
    multihost_utils.sync_global_devices(f"tokenize {out_dir} {config.split}")
  return shards.finalize(out_dir, config.split, count, spec, builder.info.full_name, host)


def _tokenize_shard(builder, out_dir, k, count, tokenizer, source_rate, config, progress, done):
  start = k * config.examples_per_shard
  stop = min(start + config.examples_per_shard, builder.info.splits[config.split].num_examples)
  split = f"{config.split}[{start}:{stop}]"
  clips, skipped = [], []
  key = sources.audio_feature(builder)
  for i, ex in enumerate(builder.as_dataset(split=split, shuffle_files=False)
                         .as_numpy_iterator()):
    clip_id, speaker, text, wav = _example_fields(ex, key, start + i, config.split)
    wav = audio.resample(wav, source_rate, tokenizer.spec.sample_rate)
    try:
      tokenizer.check_clip(clip_id, wav)
    except ClipError as e:
      if config.on_error == "raise":
        raise
      skipped.append([clip_id, str(e)])
      continue
    clips.append({"id": clip_id, "speaker": speaker, "text": text, "wav": wav})
  # Batches hold clips of one padded length; outputs are kept in input order.
  buckets = {}
  for j, clip in enumerate(clips):
    buckets.setdefault(tokenizer.bucket_of(clip["wav"].size), []).append(j)
  results = {}
  for _, members in sorted(buckets.items()):
    for b0 in range(0, len(members), tokenizer.batch_size):
      group = members[b0:b0 + tokenizer.batch_size]
      results.update(zip(group, tokenizer.tokenize([clips[j]["wav"] for j in group])))
  examples, seconds = [], 0.0
  for j, clip in enumerate(clips):
    semantic, codes = results[j]
    seconds += clip["wav"].size / tokenizer.spec.sample_rate
    examples.append({"id": clip["id"], "speaker": clip["speaker"], "text": clip["text"],
                     "duration": codes.shape[0] / tokenizer.spec.codec_frame_rate,
                     "semantic": semantic, "codes": codes})
  shards.write_shard(out_dir, config.split, k, count, examples, seconds, skipped)
  progress.update(k, done, len(examples), seconds)


def load_models(codec: str, semantic: str):
  """Models from command-line strings, replicated over this host's devices.
  codec: a size name ('tiny', ...: random weights, for smoke runs and tests),
  a codec training work dir, or 'hf:DIR[,KBPS|,levels=N]' (a Hugging Face
  EnCodec or Mimi folder; `Codec.from_spec`). semantic: a size name, 'WORKDIR,KMEANS' (a
  w2v-BERT training run and a k-means file) or 'hf:DIR,KMEANS' (a Hugging Face
  w2v-BERT 2.0 folder)."""
  mesh = partitioning.make_mesh(devices=jax.local_devices())
  codec_model = Codec.from_spec(codec, mesh=mesh)
  if "," not in semantic:
    return codec_model, SemanticTokenizer.random(semantic, mesh=mesh)
  model_dir, kmeans = semantic.split(",", 1)
  if model_dir.startswith("hf:"):
    return codec_model, SemanticTokenizer.from_hf(model_dir[3:], kmeans, mesh=mesh)
  return codec_model, SemanticTokenizer.load(model_dir, kmeans, mesh=mesh)


def start_hosts(config: JobConfig, args, parser):
  """Joins a multi-host JAX launch (the multi-host flags, as training does),
  unless --host_index and --num_hosts name this process's share: then hosts
  run as independent single processes."""
  explicit = (config.host_index is not None, config.num_hosts is not None)
  if any(explicit) and not all(explicit):
    raise ValueError("host_index and num_hosts: give both (independent processes) or "
                     "neither (from jax.distributed)")
  if not any(explicit):
    partitioning.initialize_from_flags(args, parser)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--source", required=True,
                 help="builtin:speech|piano, folder:/path or tfds:<name>")
  p.add_argument("--data_dir", default=None, help="TFDS data_dir")
  p.add_argument("--folder_sample_rate", type=int, default=16000,
                 help="sample rate that a folder: source's files must have")
  p.add_argument("--out", required=True, help="folder of the token shards")
  p.add_argument("--codec", required=True,
                 help="codec training work dir, hf:DIR[,KBPS|,levels=N] (a Hugging Face "
                      "EnCodec or Mimi folder), or a size name (random weights)")
  p.add_argument("--semantic", required=True,
                 help="WORKDIR,KMEANS or hf:DIR,KMEANS, or a size name (random weights)")
  partitioning.add_distributed_flags(p)
  for field in dataclasses.fields(JobConfig):
    if field.name == "progress":
      p.add_argument("--no_progress", action="store_true")
    elif field.type is bool:
      p.add_argument(f"--{field.name}", action="store_true")
    else:
      kind = {str: str, float: float}.get(field.type, int)
      p.add_argument(f"--{field.name}", type=kind, default=field.default)
  namespace = p.parse_args(argv)
  args = vars(namespace)
  config = JobConfig(**{f.name: args[f.name] for f in dataclasses.fields(JobConfig)
                        if f.name != "progress"}, progress=not args["no_progress"])
  start_hosts(config, namespace, p)
  # A folder: source reads its files with the job's error, resample and downmix settings.
  builder = sources.audio_builder(args["source"], args["data_dir"],
                                  sample_rate=args["folder_sample_rate"],
                                  on_error=config.on_error,
                                  allow_resample=config.allow_resample,
                                  allow_downmix=config.allow_downmix)
  codec, semantic = load_models(args["codec"], args["semantic"])
  result = run(builder, args["out"], codec, semantic, config)
  split = result.get("splits", {}).get(config.split)
  if split:
    print(f"{config.split}: {split['num_examples']} clips, {split['seconds']:.0f} s of audio in "
          f"{split['num_shards']} shards; {len(split['skipped'])} skipped")
  else:
    print(f"{result['done_shards']}/{result['num_shards']} shards done; run again to finish")


if __name__ == "__main__":
  main()
