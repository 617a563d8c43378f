"""`python -m soundlm.train`: end to end, preemption by SIGTERM, bad configs."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from soundlm import trainer
from tests import toy_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--gin_file=gin/runs/lm_tiny.gin", "--gin_bindings=Trainer.log_every = 1",
        "--gin_bindings=Trainer.eval_every = 0",
        "--gin_bindings=Trainer.checkpoint_every = 1000"]


def _command(workdir, *extra):
  return [sys.executable, "-m", "soundlm.train", f"--workdir={workdir}", *TINY, *extra]


def _run(workdir, *extra):
  return subprocess.run(_command(workdir, *extra), cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def _wait_for_logged_steps(workdir, count: int, timeout: float = 240):
  """Returns once the run in `workdir` has logged `count` metrics lines."""
  deadline = time.time() + timeout
  metrics = workdir / "metrics.jsonl"
  while time.time() < deadline:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
      return
    time.sleep(0.05)
  raise TimeoutError(f"{metrics}: fewer than {count} lines after {timeout} s")


def test_sigterm_saves_and_resume_neither_repeats_nor_skips(tmp_path):
  preempted = tmp_path / "preempted"
  process = subprocess.Popen(_command(preempted, "--gin_bindings=Trainer.num_steps = 100000"),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
  _wait_for_logged_steps(preempted, 3)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == trainer.PREEMPTED_EXIT_CODE, output
  assert "preempted: saved step" in output

  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(preempted / "checkpoints")
  stop = manager.latest_step()
  data = manager.restore(stop, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  assert data["processes"][0]["position"] == stop  # one batch consumed per step, none lost

  total = stop + 3
  resumed = _run(preempted, f"--gin_bindings=Trainer.num_steps = {total}")
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed from step {stop}" in resumed.stderr
  straight = _run(tmp_path / "straight", f"--gin_bindings=Trainer.num_steps = {total}")
  assert straight.returncode == 0, straight.stderr
  a, b = toy_setup.logged(preempted), toy_setup.logged(tmp_path / "straight")
  assert sorted(a) == list(range(1, total + 1))  # no step twice, none missing
  np.testing.assert_allclose([a[s] for s in range(1, total + 1)],
                             [b[s] for s in range(1, total + 1)], rtol=1e-6)


def test_missing_gin_file_and_bad_binding_are_clear_errors(tmp_path):
  missing = _run(tmp_path, "--gin_file=gin/runs/no_such.gin")
  assert missing.returncode == 2
  assert "--gin_file 'gin/runs/no_such.gin' does not exist" in missing.stderr
  bad = _run(tmp_path, "--gin_bindings=Trainer.num_stepz = 3")
  assert bad.returncode == 2
  assert "invalid gin configuration" in bad.stderr and "num_stepz" in bad.stderr


def test_a_refused_restart_leaves_the_work_dir_untouched(tmp_path):
  first = _run(tmp_path, "--gin_bindings=Trainer.num_steps = 2",
               "--gin_bindings=Trainer.checkpoint_every = 2")
  assert first.returncode == 0, first.stderr
  saved = (tmp_path / "config.gin").read_bytes()
  assert b"ToyLanguageModel.embed_dim = 32" in saved
  wider = _run(tmp_path, "--gin_bindings=Trainer.num_steps = 4", "--gin.ToyLanguageModel.embed_dim=64")
  assert wider.returncode != 0
  assert (tmp_path / "config.gin").read_bytes() == saved


def test_sigkill_during_checkpoint_writes_resumes_exactly(tmp_path):
  """Killed while it saves every step (asynchronously), a run resumes from its
  last complete checkpoint and logs every step once, with the losses of a run
  never interrupted."""
  killed = tmp_path / "killed"
  process = subprocess.Popen(
      _command(killed, "--gin.Trainer.num_steps=100000", "--gin.Trainer.checkpoint_every=1"),
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_logged_steps(killed, 6)
  process.kill()
  process.wait(timeout=60)
  import orbax.checkpoint as ocp
  stop = ocp.CheckpointManager(killed / "checkpoints").latest_step()
  assert stop is not None and stop >= 1
  total = stop + 3
  resumed = _run(killed, f"--gin.Trainer.num_steps={total}")
  assert resumed.returncode == 0, resumed.stderr
  straight = _run(tmp_path / "straight", f"--gin.Trainer.num_steps={total}")
  assert straight.returncode == 0, straight.stderr
  logged_steps = [json.loads(line)["step"] for line in open(killed / "metrics.jsonl")
                  if "train/model/loss" in line]
  assert logged_steps == list(range(1, total + 1))  # none twice, none missing
  a, b = toy_setup.logged(killed), toy_setup.logged(tmp_path / "straight")
  np.testing.assert_allclose([a[s] for s in logged_steps], [b[s] for s in logged_steps],
                             rtol=1e-6)
