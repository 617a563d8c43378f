"""The tokenization and decode jobs as 2 jax.distributed processes on this
machine (tests/multihost_harness.py): each host takes its own share, and
every item is written exactly once, also when all processes are killed and
the job is started again."""
import ast
import collections
import glob
import json
import os
import signal

import numpy as np
import pytest
import soundfile

from soundlm import models, partitioning
from soundlm.audiolm.model import StageConfig
from soundlm.generate import Pipeline
from soundlm.io import corpus, shards, sources
from tests import multihost_harness as harness
from tests.test_data_tokenize import _records
from tests.test_models import write_workdir

pytestmark = pytest.mark.xdist_group("multihost")

NUM_PROCESSES = 2
# The decode job's items: 0.48 s is 12 semantic frames of 25 Hz; the 0.3 s
# prompt is cut to one whole 0.2 s bucket.
NUM_ITEMS, DURATION, PROMPT_SECONDS, BUCKET_SECONDS = 6, 0.48, 0.3, 0.2


def kill_all(processes):
  for p in processes:
    p.send_signal(signal.SIGKILL)
  assert harness.wait_all(processes) == [-signal.SIGKILL] * NUM_PROCESSES


@pytest.fixture(scope="module")
def speech_data_dir(tmp_path_factory):
  """The built-in corpus prepared once, before processes read it together."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  sources.audio_builder("builtin:speech", data_dir)
  return data_dir


def test_tokenization_killed_and_restarted_writes_every_clip_once(speech_data_dir, tmp_path):
  out, logs = str(tmp_path / "tokens"), str(tmp_path / "logs")
  args = ["--source=builtin:speech", f"--data_dir={speech_data_dir}", "--split=validation",
          f"--out={out}", "--codec=tiny", "--semantic=tiny", "--examples_per_shard=2",
          "--batch_size=2", "--bucket_seconds=8.0", "--no_progress"]
  cache = str(tmp_path / "jax_cache")
  processes = harness.launch("soundlm.data.tokenize", args, logs, NUM_PROCESSES, cache)
  harness.wait_until(lambda: glob.glob(os.path.join(out, "*.json")), processes,
                     "a finished shard")
  kill_all(processes)
  assert not os.path.exists(os.path.join(out, shards.MANIFEST))
  processes = harness.launch("soundlm.data.tokenize", args, logs, NUM_PROCESSES, cache)
  assert harness.wait_all(processes) == [0] * NUM_PROCESSES, harness.logs_of(logs)
  # Every host waited for the others and reports the finished split.
  assert harness.logs_of(logs).count("validation: 9 clips") == NUM_PROCESSES
  clips = [c.id for c in corpus.load_builtin("validation", "speech")]
  written = collections.Counter(r["id"].decode().split("/")[-1] for r in _records(out))
  assert written == collections.Counter(clips)
  manifest = shards.read_json(os.path.join(out, shards.MANIFEST))
  assert manifest["splits"]["validation"]["num_shards"] == 5
  assert manifest["splits"]["validation"]["num_examples"] == len(clips)
  assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def save_pipeline(pipeline: Pipeline, root) -> str:
  """Every model of `pipeline` as a training work dir under `root`, beside its
  k-means file; returns the gin file that binds `load_pipeline` to them."""
  codec, tokenizer = pipeline.codec, pipeline.tokenizer
  parts = {"codec": (codec.model.config, codec.variables),
           "w2v_bert": (tokenizer.config, {"params": tokenizer.params}),
           "soundstorm": (pipeline.soundstorm.built.config, pipeline.soundstorm.variables)}
  for stage, (decoder, params) in pipeline.audiolm.stages.items():
    parts[f"{stage}_stage"] = (StageConfig(decoder.model.config, decoder.layout),
                               {"params": params})
  bindings = {"kmeans_path": root / "kmeans.npz"}
  tokenizer.kmeans.save(bindings["kmeans_path"])
  for name, (config, variables) in parts.items():
    model = models.Model(config, models.family_of(config).build(config), variables,
                         partitioning.Partitioner(), source="random")
    write_workdir(root / name, model)
    bindings[f"{name.removesuffix('_stage')}_workdir"] = root / name
  gin_file = root / "pipeline.gin"
  gin_file.write_text("import soundlm.generate\n" + "".join(
      f"load_pipeline.{key} = '{path}'\n" for key, path in bindings.items()))
  return str(gin_file)


@pytest.fixture(scope="module")
def pipeline_gin(tmp_path_factory):
  """The tiny random pipeline saved once as work dirs, with a prompt beside it:
  (gin file, prompt path, sample rate)."""
  root = tmp_path_factory.mktemp("pipeline")
  pipeline = Pipeline.random("tiny", seed=0)
  rate = pipeline.sample_rate
  t = np.arange(int(PROMPT_SECONDS * rate)) / rate
  soundfile.write(root / "prompt.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
                  rate)
  return save_pipeline(pipeline, root), str(root / "prompt.wav"), rate


def finished(out: str, host: int) -> list[dict]:
  """The complete records in one host's output manifest (a kill may tear the last)."""
  path = os.path.join(out, f"manifest-{host:05d}.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def test_decode_job_killed_and_restarted_writes_every_item_once(pipeline_gin, tmp_path):
  gin_file, prompt, rate = pipeline_gin
  manifest = tmp_path / "items.jsonl"
  # Items 0 and 1 continue the prompt (one per host), the rest are unconditional.
  manifest.write_text("".join(
      json.dumps({"id": f"item{i}", "prompt": prompt if i < 2 else None,
                  "duration": DURATION, "seed": i}) + "\n" for i in range(NUM_ITEMS)))
  out, logs = str(tmp_path / "out"), str(tmp_path / "logs")
  args = [f"--gin_file={gin_file}", f"--manifest={manifest}", f"--output_dir={out}",
          "--batch_size=2", f"--prompt_bucket_seconds={BUCKET_SECONDS}"]
  cache = str(tmp_path / "jax_cache")
  processes = harness.launch("soundlm.decode", args, logs, NUM_PROCESSES, cache)
  harness.wait_until(lambda: finished(out, 0) or finished(out, 1), processes,
                     "a decoded item")
  kill_all(processes)
  before = [r["id"] for host in range(NUM_PROCESSES) for r in finished(out, host)]
  processes = harness.launch("soundlm.decode", args, logs, NUM_PROCESSES, cache)
  assert harness.wait_all(processes) == [0] * NUM_PROCESSES, harness.logs_of(logs)
  # The restart decoded exactly what the killed run had not recorded.
  counts = [ast.literal_eval(line.split("done: ", 1)[1])
            for line in harness.logs_of(logs).splitlines() if " done: {" in line]
  assert len(counts) == NUM_PROCESSES
  assert sum(c["skipped_done"] for c in counts) == len(before) >= 1
  assert sum(c["ok"] for c in counts) == NUM_ITEMS - len(before)
  for host in range(NUM_PROCESSES):
    records = finished(out, host)
    assert [r["id"] for r in records] == [f"item{i}" for i in range(host, NUM_ITEMS,
                                                                     NUM_PROCESSES)]
    assert {r["status"] for r in records} == {"ok"}
    assert [r["prompt_seconds"] for r in records] == [BUCKET_SECONDS, None, None]
  for i in range(NUM_ITEMS):
    info = soundfile.info(os.path.join(out, f"item{i}.wav"))
    assert (info.samplerate, info.frames) == (rate, round(DURATION * rate))
  # A continuation starts with the prompt samples it used.
  used = round(BUCKET_SECONDS * rate)
  np.testing.assert_allclose(soundfile.read(os.path.join(out, "item1.wav"))[0][:used],
                             soundfile.read(prompt)[0][:used], atol=1e-4)
  # No temporary file is left behind by the kill.
  assert sorted(os.listdir(out)) == sorted(
      [f"item{i}.wav" for i in range(NUM_ITEMS)] +
      [f"manifest-{host:05d}.jsonl" for host in range(NUM_PROCESSES)])
