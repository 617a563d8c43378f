"""The batched decode job: a manifest of prompts in, audio files and a manifest out.

    python -m soundlm.decode --manifest=items.jsonl --output_dir=out \
        --gin_file=gin/generate/quickstart.gin

Each input line is JSON: `{"id": "a", "prompt": "x.wav", "duration": 4.0,
"seed": 0, "options": {...}}` (`prompt` may be null for unconditional audio,
`id` defaults to the line number, `options` are `Pipeline.generate` keywords
such as `acoustic`, `temperature` or `keep_prompt`). Items are split over
hosts (item i goes to host i mod hosts; hosts join one jax.distributed job
as in training), prompts cut to whole `--prompt_bucket_seconds` (so few
programs compile), grouped into fixed-size batches of identical shape, and
every finished item gets `<id>.wav` plus a line in `manifest-<host>.jsonl`
(with the prompt seconds used). Restarting skips items already in any host's
manifest, so each is written exactly once, also when the restart has another
host count. A bad item is recorded with its error and the rest go on.
The manifest, the prompts and the output dir may be gs:// URIs, so every
host of a pod reads and writes the same bucket.
"""
import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from typing import Callable, Sequence

import numpy as np
from etils import epath

from soundlm.generate import ACOUSTIC_GENERATORS
from soundlm.io import paths
from soundlm.io.audio import write_wav

ALLOWED_KEYS = {"id", "prompt", "duration", "seed", "options"}
MAX_SEED = 2**31 - 1
# Safe file names: letters, digits, '_', '.', '-'; no separators, no '..'.
SAFE_ID = re.compile(r"\w[\w.-]{0,199}")
MANIFEST_NAME = re.compile(r"manifest-\d{5}\.jsonl")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _acoustic(value):
  if value not in ACOUSTIC_GENERATORS:
    raise ValueError(f"options.acoustic must be one of {ACOUSTIC_GENERATORS}, got {value!r}")
  return value


def _temperature(value):
  if not _number(value) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"options.temperature must be a finite number > 0, got {value!r}")
  return float(value)


def _keep_prompt(value):
  if not isinstance(value, bool):
    raise ValueError(f"options.keep_prompt must be true or false, got {value!r}")
  return value


# The `Pipeline.generate` keywords an item may set, with their validators.
OPTIONS = {"acoustic": _acoustic, "temperature": _temperature, "keep_prompt": _keep_prompt}


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  prompt: str | None
  duration: float
  seed: int = 0
  options: tuple = ()  # sorted (key, value) pairs, hashable for grouping


@dataclasses.dataclass(frozen=True)
class BadItem:
  id: str
  error: str


def check_id(item_id) -> str:
  """The item id if it is a safe file name, else ValueError saying why."""
  if not isinstance(item_id, str):
    raise ValueError(f"id must be a string, got {item_id!r}")
  if not SAFE_ID.fullmatch(item_id) or ".." in item_id:
    raise ValueError(f"id {item_id!r} is not a safe file name (1-200 letters, digits, '_', "
                     "'.', '-', starting with a letter, digit or '_', without '..')")
  return item_id


def parse_item(record, default_id: str) -> Item:
  """One manifest record as an Item; ValueError names the first bad field."""
  if not isinstance(record, dict):
    raise ValueError("a line must be a JSON object")
  unknown = set(record) - ALLOWED_KEYS
  if unknown:
    raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {sorted(ALLOWED_KEYS)})")
  item_id = check_id(record.get("id", default_id))
  prompt = record.get("prompt")
  if prompt is not None and (not isinstance(prompt, str) or not prompt):
    raise ValueError(f"prompt must be a file path or null, got {prompt!r}")
  duration = record.get("duration")
  if not _number(duration) or not math.isfinite(duration) or duration <= 0:
    raise ValueError(f"duration must be a finite positive number of seconds, got "
                     f"{duration!r}")
  seed = record.get("seed", 0)
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
    raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
  options = record.get("options", {})
  if not isinstance(options, dict):
    raise ValueError(f"options must be an object, got {options!r}")
  unknown = set(options) - set(OPTIONS)
  if unknown:
    raise ValueError(f"unknown options {sorted(unknown)} (allowed: {sorted(OPTIONS)})")
  checked = {key: OPTIONS[key](value) for key, value in options.items()}
  return Item(item_id, prompt, float(duration), seed, tuple(sorted(checked.items())))


def parse_manifest(path: str) -> list[Item | BadItem]:
  """Every line of the manifest, valid or not (bad lines become BadItems that
  carry the item's id when it has a valid one)."""
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"--manifest {path!r} does not exist")
  items, seen = [], set()
  with epath.Path(path).open() as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      item_id = f"line{number:06d}"
      try:
        record = json.loads(line)
        if isinstance(record, dict) and "id" in record:
          item_id = check_id(record["id"])
        item = parse_item(record, item_id)
        if item.id in seen:
          raise ValueError(f"duplicate id {item.id!r}")
        items.append(item)
        seen.add(item.id)
      except ValueError as error:  # json.JSONDecodeError is a ValueError
        if item_id in seen:
          item_id = f"line{number:06d}"
        items.append(BadItem(item_id, f"{path}:{number}: {error}"))
  return items


def _read_records(path: str) -> tuple[list[dict], list[bytes], bytes]:
  """(records, complete lines, torn last line) of an output manifest."""
  lines = epath.Path(path).read_bytes().split(b"\n")
  complete, torn = lines[:-1], lines[-1]
  records = []
  for number, line in enumerate(complete, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as error:
      raise ValueError(f"{path}:{number}: unreadable record {line[:80]!r}") from error
  return records, complete, torn


class OutputManifest:
  """This host's output manifest: one JSON line per finished item.

  `done` also holds the items in the other hosts' manifests in `output_dir`,
  so a restart with another host count decodes nothing twice. A kill can tear
  the last line: this host's is dropped (and the item decoded again), another
  host's is ignored; any other unreadable line is an error that names it.

  In an object store (a gs:// output dir) there is no append: every record
  rewrites this host's manifest object whole, so it is never torn.
  """

  def __init__(self, output_dir: str, host: int):
    root = epath.Path(output_dir)
    self.path = root / f"manifest-{host:05d}.jsonl"
    self.in_store = paths.in_object_store(output_dir)
    self.done: set[str] = set()
    self.content = b""  # this host's records, kept in a store to rewrite the object whole
    # In a store, a prefix with no objects does not exist.
    for other in sorted(root.iterdir()) if root.exists() else ():
      if MANIFEST_NAME.fullmatch(other.name) and other.name != self.path.name:
        self.done |= {r["id"] for r in _read_records(other)[0]}
    if not self.path.exists():
      return
    records, complete, torn = _read_records(self.path)
    self.content = b"".join(line + b"\n" for line in complete)
    if torn.strip():
      logging.warning("%s: dropping a torn last line (%d bytes) left by an interrupted "
                      "write; its item is decoded again", self.path, len(torn))
      paths.write_whole(self.path, self.content)
    self.done |= {r["id"] for r in records}

  def append(self, record: dict):
    line = (json.dumps(record) + "\n").encode()
    if self.in_store:
      self.content += line
      paths.write_whole(self.path, self.content)
    else:
      with open(self.path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    self.done.add(record["id"])


GenerateBatch = Callable[[Sequence[Item], Sequence[np.ndarray | None]], np.ndarray]


def run_job(items: Sequence[Item | BadItem], generate_batch: GenerateBatch,
            load_prompt: Callable[[str], np.ndarray], output_dir: str, sample_rate: int,
            batch_size: int, host: int = 0, num_hosts: int = 1,
            prompt_bucket: int = 0) -> dict:
  """Decodes this host's share of `items`; returns counts of what happened.

  `generate_batch(items, prompts)` returns audio [batch_size, N] for exactly
  `batch_size` items of identical shape; short batches are padded with copies
  of their last item so that one compiled program serves every batch. With
  `prompt_bucket` (samples) every prompt is cut to a whole number of buckets,
  so a manifest of many prompt lengths compiles a few programs; 0 uses each
  prompt whole.
  """
  epath.Path(output_dir).mkdir(parents=True, exist_ok=True)
  manifest = OutputManifest(output_dir, host)
  mine = [it for i, it in enumerate(items) if i % num_hosts == host]
  todo = [it for it in mine if it.id not in manifest.done]
  counts = {"items": len(mine), "skipped_done": len(mine) - len(todo), "ok": 0, "errors": 0}

  def fail(item_id, error):
    logging.error("item %s failed: %s", item_id, error)
    manifest.append({"id": item_id, "status": "error", "error": error})
    counts["errors"] += 1

  groups: dict[tuple, list[tuple[Item, np.ndarray | None]]] = {}
  for item in todo:
    if isinstance(item, BadItem):
      fail(item.id, item.error)
      continue
    try:
      prompt = None if item.prompt is None else load_prompt(item.prompt)
    except Exception as error:  # noqa: BLE001  (any unreadable prompt fails its item only)
      fail(item.id, f"prompt {item.prompt!r}: {error}")
      continue
    if prompt is not None and prompt_bucket:
      used = prompt.shape[-1] // prompt_bucket * prompt_bucket
      if not used:
        fail(item.id, f"prompt {item.prompt!r} has {prompt.shape[-1]} samples, shorter "
                      f"than one prompt bucket ({prompt_bucket} samples)")
        continue
      prompt = prompt[..., :used]
    shape = None if prompt is None else prompt.shape
    groups.setdefault((shape, item.duration, item.options), []).append((item, prompt))

  total, start = len(todo), time.time()
  for group in groups.values():
    for first in range(0, len(group), batch_size):
      chunk = group[first:first + batch_size]
      padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
      try:
        audio = generate_batch([it for it, _ in padded], [p for _, p in padded])
      except Exception as error:  # noqa: BLE001  (a failed batch fails its items only)
        for item, _ in chunk:
          fail(item.id, f"{type(error).__name__}: {error}")
        continue
      for (item, prompt), wav in zip(chunk, np.asarray(audio)):
        path = str(epath.Path(output_dir) / f"{item.id}.wav")
        write_wav(path, wav, sample_rate)
        used = None if prompt is None else prompt.shape[-1] / sample_rate
        manifest.append({"id": item.id, "status": "ok", "audio": path,
                         "prompt": item.prompt, "prompt_seconds": used,
                         "duration": item.duration,
                         "seed": item.seed, "options": dict(item.options)})
        counts["ok"] += 1
      finished = counts["ok"] + counts["errors"]
      rate = finished / max(time.time() - start, 1e-9)
      logging.info("decoded %d/%d items (%d errors), %.2f items/s", finished, total,
                   counts["errors"], rate)
  return counts


def main(argv=None) -> int:
  from soundlm import generate as generate_lib
  from soundlm import gin_utils
  from soundlm import partitioning
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  gin_utils.add_flags(parser)
  parser.add_argument("--manifest", required=True, help="input JSON-lines manifest")
  parser.add_argument("--output_dir", required=True, help="audio and output manifests")
  parser.add_argument("--batch_size", type=int, default=8)
  partitioning.add_distributed_flags(parser)
  parser.add_argument("--prompt_bucket_seconds", type=float, default=0.5,
                      help="prompts are cut to whole buckets of this length (0: used "
                           "whole), so few programs are compiled")
  args = gin_utils.parse_args(parser, argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)
  if args.batch_size < 1:
    parser.exit(2, f"error: --batch_size must be >= 1, got {args.batch_size}\n")
  if not math.isfinite(args.prompt_bucket_seconds) or args.prompt_bucket_seconds < 0:
    parser.exit(2, f"error: --prompt_bucket_seconds must be >= 0, got "
                   f"{args.prompt_bucket_seconds}\n")
  try:
    gin_utils.parse_from_args(args)
    items = parse_manifest(args.manifest)
  except (FileNotFoundError, ValueError) as error:
    parser.exit(2, f"error: {error}\n")
  partitioning.initialize_from_flags(args, parser)
  import jax
  # Every chip of this host decodes: a data-parallel mesh over the local devices
  # (model parameters laid out by the gin-configured rules).
  mesh = partitioning.make_mesh(devices=jax.local_devices())
  pipeline = generate_lib.load_pipeline(mesh=mesh, rules=partitioning.logical_axis_rules())
  counts = run_job(items, pipeline.generate_items, pipeline.load_prompt, args.output_dir,
                   pipeline.sample_rate, args.batch_size, jax.process_index(),
                   jax.process_count(),
                   prompt_bucket=round(args.prompt_bucket_seconds * pipeline.sample_rate))
  logging.info("done: %s", counts)
  return 0


if __name__ == "__main__":
  sys.exit(main())
