"""A gs:// work dir against a real GCS emulator on the loopback address.

gcsfs (what etils.epath uses for gs:// with EPATH_USE_TF=false) and
google-cloud-storage (TensorBoard's gs:// writer) reach the emulator through
STORAGE_EMULATOR_HOST. The emulator lacks what tensorstore needs for orbax's
array writes (object generations) and the rename API, so checkpoints' arrays
are not written here; everything the trainer writes itself is.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

emulator = pytest.importorskip("gcp_storage_emulator.server")
pytest.importorskip("gcsfs")

from etils import epath  # noqa: E402

from soundlm import checkpoints  # noqa: E402
from soundlm import trainer as trainer_lib  # noqa: E402

BUCKET = "soundlm-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gcs(monkeypatch, tmp_path):
  """An emulated bucket BUCKET; the current directory is an empty tmp_path, so
  a gs:// URI taken for a local path would show up there."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
  monkeypatch.setenv("EPATH_USE_TF", "false")
  monkeypatch.chdir(tmp_path)
  yield f"gs://{BUCKET}"
  server.stop()
  assert list(tmp_path.iterdir()) == []


# Runs in its own process: TensorBoard's gs:// writer uploads once more when
# collected at exit, which must happen while the emulator still serves.
WRITE_METRICS = """
import sys
from soundlm import trainer
workdir = sys.argv[1]
writer = trainer.MetricsWriter(workdir)
for step in (1, 2, 3):
  writer.write(step, {"loss": 1.0 / step})
writer.close()
resumed = trainer.MetricsWriter(workdir, resume_step=2)  # step 3 is logged again
resumed.write(3, {"loss": 0.25})
resumed.close()
"""


def test_metrics_and_tensorboard_go_to_the_bucket_and_resume(gcs):
  workdir = f"{gcs}/runs/lm"
  subprocess.run([sys.executable, "-c", WRITE_METRICS, workdir], check=True, timeout=300,
                 env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  run = epath.Path(workdir)
  records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert records == [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5},
                     {"step": 3, "train/loss": 0.25}]
  assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())


def test_checkpointer_keeps_a_gs_uri(gcs):
  checkpointer = checkpoints.Checkpointer(f"{gcs}/runs/lm/checkpoints", save_every=1)
  try:
    assert str(checkpointer.directory) == f"{gcs}/runs/lm/checkpoints"
    assert checkpointer.latest_step() is None
  finally:
    checkpointer.close()


def test_kmeans_file_round_trips_through_the_bucket(gcs):
  import numpy as np

  from soundlm.semantic.kmeans import KMeans

  rng = np.random.default_rng(0)
  kmeans = KMeans(rng.standard_normal((4, 3)).astype(np.float32), np.zeros(3, np.float32),
                  np.ones(3, np.float32), 2, {"size": "tiny"})
  kmeans.save(f"{gcs}/kmeans.npz")
  loaded = KMeans.load(f"{gcs}/kmeans.npz")
  np.testing.assert_array_equal(loaded.centroids, kmeans.centroids)
  assert (loaded.layer, loaded.model, loaded.path) == (2, {"size": "tiny"}, f"{gcs}/kmeans.npz")
  with pytest.raises(FileNotFoundError, match="k-means file gs://soundlm-test/none.npz"):
    KMeans.load(f"{gcs}/none.npz")


def test_decode_job_reads_and_writes_the_bucket_and_resumes(gcs):
  import numpy as np

  from soundlm import decode
  from soundlm.io.audio import read_audio, write_wav

  rate = 8000
  write_wav(f"{gcs}/prompts/a.wav", np.full(rate, 0.25, np.float32), rate)
  epath.Path(f"{gcs}/items.jsonl").write_text("".join(
      json.dumps({"id": i, "prompt": f"{gcs}/prompts/a.wav", "duration": 1.0, "seed": 0}) + "\n"
      for i in ("x", "y", "z")))
  items = decode.parse_manifest(f"{gcs}/items.jsonl")
  calls = []

  def generate(batch, prompts):
    calls.extend(item.id for item in batch)
    return np.stack(prompts)

  def run(items):
    return decode.run_job(items, generate, lambda p: read_audio(p, rate)[0],
                          f"{gcs}/out", rate, batch_size=2)

  assert run(items[:2])["ok"] == 2
  assert run(items) == {"items": 3, "skipped_done": 2, "ok": 1, "errors": 0}
  assert calls == ["x", "y", "z", "z"]  # the last batch is padded with its last item
  records = [json.loads(line) for line in
             epath.Path(f"{gcs}/out/manifest-00000.jsonl").read_text().splitlines()]
  assert [r["id"] for r in records] == ["x", "y", "z"]
  assert records[2]["audio"] == f"{gcs}/out/z.wav"
  np.testing.assert_allclose(read_audio(f"{gcs}/out/z.wav", rate)[0], 0.25, atol=1e-4)


def test_a_runs_saved_config_is_read_from_the_bucket(gcs):
  from soundlm.evaluation import lm

  run = epath.Path(f"{gcs}/runs/soundstorm")
  run.mkdir(parents=True)
  (run / "config.gin").write_text("import soundlm.data.tasks\n\n"
                                  "soundlm.data.soundstorm_task.crop_seconds = 0.4\n"
                                  "eval/soundlm.data.soundstorm_task.crop_seconds = 2.0\n")
  assert lm.training_crop_seconds(str(run)) == 0.4
  (run / "config.gin").write_text("soundlm.data.soundstorm_task.crop_seconds = %CROP\n")
  with pytest.raises(ValueError, match="must be a literal.*--soundstorm_crop_seconds"):
    lm.training_crop_seconds(str(run))
  assert lm.training_crop_seconds(f"{gcs}/runs/none") is None
