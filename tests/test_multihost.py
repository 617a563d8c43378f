"""Multi-host training as several local processes (tests/multihost_harness.py).

`launch_train` starts `python -m soundlm.train` once per process, on an
fsdp x tensor mesh that spans the processes. The tests kill or signal these
real processes and compare what the restarted runs write with one
uninterrupted run, exactly.
"""
import json
import os
import shutil
import signal
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from soundlm import checkpoints
from soundlm import trainer as trainer_lib
from tests import multihost_harness as harness
from tests.multihost_harness import wait_all

pytestmark = pytest.mark.xdist_group("multihost")

NUM_PROCESSES = 2
NUM_STEPS = 16


def launch_train(workdir, num_processes: int = NUM_PROCESSES, num_steps: int = NUM_STEPS,
                 checkpoint_every: int = 4) -> list[subprocess.Popen]:
  """One `soundlm.train` process per host of a `num_processes`-host job."""
  return harness.launch("soundlm.train", [
      "--gin_file=gin/runs/lm_tiny.gin", "--gin_file=gin/partitioning/fsdp_tensor.gin",
      f"--workdir={workdir}", f"--gin.Trainer.num_steps={num_steps}",
      "--gin.Trainer.log_every=1", f"--gin.Trainer.checkpoint_every={checkpoint_every}",
      "--gin.Trainer.eval_every=0", "--gin.Trainer.keep_checkpoints=100"],
      os.path.join(workdir, "logs"), num_processes)


def wait_for_checkpoint(workdir, processes, min_step: int = 4) -> int:
  """The newest completed checkpoint once one of `min_step` or later exists,
  while every process still runs."""
  def newest():
    steps = checkpoints.checkpoint_steps(os.path.join(workdir, "checkpoints"))
    return steps[-1] if steps and steps[-1] >= min_step else None
  return harness.wait_until(newest, processes, "a checkpoint")


def losses(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  steps = [r["step"] for r in records]
  assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
  return {r["step"]: r["train/model/loss"] for r in records}


def final_params(workdir):
  """The last checkpoint's parameters, read onto one device."""
  step = checkpoints.checkpoint_steps(os.path.join(workdir, "checkpoints"))[-1]
  assert step == NUM_STEPS
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      ocp.StandardCheckpointer().metadata(path).item_metadata)
  return jax.device_get(ocp.StandardCheckpointer().restore(path, target)["params"])


def data_positions(workdir, step):
  with open(os.path.join(workdir, "checkpoints", str(step), "data", "metadata")) as f:
    return json.load(f)["processes"]


def logs_of(workdir) -> str:
  return harness.logs_of(os.path.join(workdir, "logs"))


def assert_same_run(workdir, reference):
  assert losses(workdir) == losses(reference)
  np.testing.assert_equal(final_params(workdir), final_params(reference))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted 2-process run."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  assert wait_all(launch_train(workdir)) == [0] * NUM_PROCESSES, logs_of(workdir)
  return workdir


def test_every_process_saves_its_own_input_position(reference):
  positions = data_positions(reference, NUM_STEPS)
  assert [p["host"] for p in positions] == list(range(NUM_PROCESSES))
  assert {p["num_hosts"] for p in positions} == {NUM_PROCESSES}


def test_all_processes_killed_then_restarted_equal_one_run(tmp_path, reference):
  workdir = str(tmp_path)
  processes = launch_train(workdir)
  killed_after = wait_for_checkpoint(workdir, processes)
  for p in processes:
    p.send_signal(signal.SIGKILL)
  assert wait_all(processes) == [-signal.SIGKILL] * NUM_PROCESSES
  assert killed_after < NUM_STEPS
  assert wait_all(launch_train(workdir)) == [0] * NUM_PROCESSES, logs_of(workdir)
  assert "resumed from step" in logs_of(workdir)
  assert_same_run(workdir, reference)


def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path, reference):
  workdir = str(tmp_path)
  processes = launch_train(workdir)
  wait_for_checkpoint(workdir, processes)
  processes[1].send_signal(signal.SIGTERM)
  codes = wait_all(processes)
  log = logs_of(workdir)
  assert codes == [trainer_lib.PREEMPTED_EXIT_CODE] * NUM_PROCESSES, log
  saved = sorted(int(line.rsplit("saved step ", 1)[1].split(",")[0])
                 for line in log.splitlines() if "preempted: saved step" in line)
  assert len(saved) == NUM_PROCESSES and len(set(saved)) == 1, log
  assert checkpoints.checkpoint_steps(os.path.join(workdir, "checkpoints"))[-1] == saved[0]
  assert wait_all(launch_train(workdir)) == [0] * NUM_PROCESSES, logs_of(workdir)
  assert_same_run(workdir, reference)


def test_restart_with_another_process_count_is_refused(reference, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  processes = launch_train(workdir, num_processes=1)
  assert wait_all(processes) != [0]
  assert "was written by 2 processes but this run has 1" in logs_of(workdir)
