"""Several JAX processes on this machine posing as the hosts of a pod.

`launch_train` starts `python -m soundlm.train` once per process, joined by
jax.distributed on a loopback coordinator with CPU (gloo) collectives, each
process with two virtual CPU devices, on an fsdp x tensor mesh that spans the
processes. The tests kill or signal these real processes and compare what
the restarted runs write with one uninterrupted run, exactly.
"""
import json
import shutil
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from soundlm import checkpoints
from soundlm import trainer as trainer_lib

pytestmark = pytest.mark.xdist_group("multihost")

NUM_PROCESSES = 2
NUM_STEPS = 16
TIMEOUT_S = 240
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def launch_train(workdir, num_processes: int = NUM_PROCESSES, num_steps: int = NUM_STEPS,
                 checkpoint_every: int = 4) -> list[subprocess.Popen]:
  """One `soundlm.train` process per host of a `num_processes`-host job."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  address = f"127.0.0.1:{_free_port()}"
  logs = os.path.join(workdir, "logs")
  os.makedirs(logs, exist_ok=True)
  processes = []
  for index in range(num_processes):
    command = [
        sys.executable, "-m", "soundlm.train", "--gin_file=gin/runs/lm_tiny.gin",
        "--gin_file=gin/partitioning/fsdp_tensor.gin", f"--workdir={workdir}",
        f"--coordinator_address={address}", f"--num_processes={num_processes}",
        f"--process_id={index}", f"--gin.Trainer.num_steps={num_steps}",
        "--gin.Trainer.log_every=1", f"--gin.Trainer.checkpoint_every={checkpoint_every}",
        "--gin.Trainer.eval_every=0", "--gin.Trainer.keep_checkpoints=100"]
    log = open(os.path.join(logs, f"process{index}.{time.time_ns()}.log"), "w")
    processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    log.close()
  return processes


def wait_all(processes) -> list[int]:
  deadline = time.time() + TIMEOUT_S
  try:
    return [p.wait(timeout=max(deadline - time.time(), 1)) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()


def wait_for_checkpoint(workdir, processes, min_step: int = 4) -> int:
  """The newest completed checkpoint once one of `min_step` or later exists,
  while every process still runs."""
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline:
    steps = checkpoints.checkpoint_steps(os.path.join(workdir, "checkpoints"))
    if steps and steps[-1] >= min_step:
      return steps[-1]
    assert all(p.poll() is None for p in processes), "a process ended before a checkpoint"
    time.sleep(0.05)
  raise TimeoutError(f"no checkpoint in {workdir} after {TIMEOUT_S}s")


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
  folder = os.path.join(workdir, "logs")
  return "\n".join(open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder)))


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
