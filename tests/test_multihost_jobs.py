"""The tokenization and decode jobs as 2 jax.distributed processes on this
machine (tests/multihost_harness.py): each host takes its own share, and
every item is written exactly once, also when all processes are killed and
the job is started again."""
import collections
import glob
import os
import signal

import pytest

from soundlm.io import corpus, shards, sources
from tests import multihost_harness as harness
from tests.test_data_tokenize import _records

pytestmark = pytest.mark.xdist_group("multihost")

NUM_PROCESSES = 2


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
