"""Several JAX processes on this machine posing as the hosts of a pod.

`launch` starts one process of a soundlm entry point per host, joined by
jax.distributed on a loopback coordinator with CPU (gloo) collectives, each
with two virtual CPU devices. Tests kill or signal these real processes and
check what they leave behind.
"""
import os
import socket
import subprocess
import sys
import time

TIMEOUT_S = 240
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def launch(module: str, args: list[str], logs: str, num_processes: int,
           compilation_cache: str | None = None) -> list[subprocess.Popen]:
  """`python -m module args` once per process of a `num_processes`-host job;
  each process's output goes to a new file under `logs`. With
  `compilation_cache` (a folder), JAX keeps every compiled program there, so
  a restarted job compiles little."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  if compilation_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compilation_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  address = f"127.0.0.1:{free_port()}"
  os.makedirs(logs, exist_ok=True)
  processes = []
  for index in range(num_processes):
    command = [sys.executable, "-m", module, *args, f"--coordinator_address={address}",
               f"--num_processes={num_processes}", f"--process_id={index}"]
    with open(os.path.join(logs, f"process{index}.{time.time_ns()}.log"), "w") as log:
      processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT))
  return processes


def wait_all(processes) -> list[int]:
  """Every process's exit status; any still running after TIMEOUT_S is killed."""
  deadline = time.time() + TIMEOUT_S
  try:
    return [p.wait(timeout=max(deadline - time.time(), 1)) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()


def wait_until(condition, processes, what: str):
  """Polls `condition()` until it returns something true, which is returned,
  while every process still runs."""
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline:
    result = condition()
    if result:
      return result
    assert all(p.poll() is None for p in processes), f"a process ended before {what}"
    time.sleep(0.05)
  raise TimeoutError(f"no {what} after {TIMEOUT_S}s")


def logs_of(logs: str) -> str:
  return "\n".join(open(os.path.join(logs, name)).read() for name in sorted(os.listdir(logs)))
