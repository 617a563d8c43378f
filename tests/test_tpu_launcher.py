"""launch/tpu_pod.sh and launch/tpu_worker.sh without a TPU: every command
--dry_run prints is compared with a golden file, bad arguments fail with a
message naming them, and the worker script starts, follows and stops a real
detached job on this machine.

Set SOUNDLM_UPDATE_GOLDEN=1 to rewrite the golden files after an intended
change (then read their diff).
"""
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
TRAIN_FLAGS = ["--gin_file=gin/runs/lm_tiny.gin", "--workdir=gs://my-bucket/lm",
               "--gin.Trainer.num_steps=1000", "--gin_bindings=Trainer.name = 'a run'"]

CASES = {
    "tpu_pod_train_v4": ("tpu_pod.sh", ["--tpu=my-v4", "--zone=us-central2-b",
                                        "--project=my-project", "--accelerator_type=v4-32",
                                        "--dry_run", "--", *TRAIN_FLAGS]),
    "tpu_pod_train_v5e_spot": ("tpu_pod.sh", ["--tpu=my-v5e", "--zone=us-west4-a",
                                              "--accelerator_type=v5litepod-16", "--spot",
                                              "--job=lm-run2", "--dry_run", "--",
                                              *TRAIN_FLAGS]),
    "decode_tpu_v6e": ("decode_tpu.sh", ["--tpu=my-v6e", "--zone=us-east5-b",
                                         "--accelerator_type=v6e-8", "--dry_run", "--",
                                         "--gin_file=gin/generate/quickstart.gin",
                                         "--manifest=/mnt/disks/shared/items.jsonl",
                                         "--output_dir=/mnt/disks/shared/decoded",
                                         "--batch_size=16"]),
    "tpu_pod_logs": ("tpu_pod.sh", ["--tpu=my-v4", "--zone=us-central2-b", "--job=lm-run2",
                                    "--logs", "--dry_run"]),
    "decode_tpu_stop": ("decode_tpu.sh", ["--tpu=my-v6e", "--zone=us-east5-b", "--stop",
                                          "--dry_run"]),
}


def launch(script, args, **kwargs):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args],
                        capture_output=True, text=True, timeout=30, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_prints_the_golden_commands(name):
  script, args = CASES[name]
  result = launch(script, args)
  assert result.returncode == 0, result.stderr
  path = os.path.join(GOLDEN, f"{name}.txt")
  if os.environ.get("SOUNDLM_UPDATE_GOLDEN"):
    with open(path, "w") as f:
      f.write(result.stdout)
  with open(path) as f:
    assert result.stdout == f.read(), f"{name}: dry run differs from {path}"


def test_the_job_flags_reach_the_workers_unchanged():
  result = launch(*CASES["tpu_pod_train_v4"])
  start = [shlex.split(line) for line in result.stdout.splitlines()
           if "tpu_worker.sh start" in line]
  assert len(start) == 1
  command = start[0][-1].removeprefix("--command=")
  assert shlex.split(command) == ["bash", "soundlm/launch/tpu_worker.sh", "start", "train",
                                  "soundlm.train", *TRAIN_FLAGS]


@pytest.mark.parametrize("args,message", [
    (["--zone=z", "--", "--workdir=w"], "--tpu and --zone are required"),
    (["--tpu=t", "--zone=z", "--workdir=w"], "unknown option --workdir=w (put the job's flags after --"),
    (["--tpu=t", "--zone=z", "--accelerator_type=v9-8", "--", "--workdir=w"],
     "no default --runtime_version for --accelerator_type=v9-8"),
    (["--tpu=t", "--zone=z"], "no job flags: put them after --"),
    (["--tpu=t", "--zone=z", "--logs", "--", "--workdir=w"], "--logs takes no job flags"),
    (["--tpu=t", "--zone=z", "--job=../x", "--stop"], "--job must be a plain name, got '../x'"),
    (["--tpu=t", "--zone=z", "--module=soundlm.train;rm", "--", "--workdir=w"],
     "--module must be a Python module name"),
])
def test_bad_arguments_fail_with_a_message_naming_them(args, message):
  result = launch("tpu_pod.sh", [*args, "--dry_run"])
  assert result.returncode == 2 and result.stdout == ""
  assert message in result.stderr


def test_help_describes_every_option():
  result = launch("tpu_pod.sh", ["--help"])
  assert result.returncode == 0
  for option in ("--tpu", "--zone", "--project", "--accelerator_type", "--runtime_version",
                 "--spot", "--module", "--job", "--logs", "--stop", "--dry_run"):
    assert option in result.stdout, option


def test_worker_starts_follows_and_stops_a_detached_job(tmp_path):
  """A stand-in job that, like training, exits 75 on SIGTERM."""
  (tmp_path / "standin.py").write_text(
      "import signal, sys, time\n"
      "signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))\n"
      "print('args', sys.argv[1:], flush=True)\n"
      "time.sleep(120)\n")
  env = dict(os.environ, SOUNDLM_VENV=os.path.dirname(os.path.dirname(sys.executable)),
             SOUNDLM_LOGS=str(tmp_path / "logs"), TPU_WORKER_ID="3",
             PYTHONPATH=str(tmp_path))
  worker = lambda *args: launch("tpu_worker.sh", list(args), env=env)  # noqa: E731
  log = tmp_path / "logs" / "job1" / "worker-3.log"
  started = worker("start", "job1", "standin", "a b", "--x='y'")
  assert started.returncode == 0, started.stderr
  assert str(log) in started.stdout
  deadline = time.time() + 20
  while "args" not in (log.read_text() if log.exists() else ""):
    assert time.time() < deadline, "the job wrote nothing"
    time.sleep(0.1)
  assert log.read_text() == "args ['a b', \"--x='y'\"]\n"
  again = worker("start", "job1", "standin")
  assert again.returncode == 1 and "job job1 still runs on" in again.stderr
  assert worker("check", "job1").returncode == 1
  assert "sent SIGTERM" in worker("stop", "job1").stdout
  while worker("check", "job1").returncode != 0:
    assert time.time() < deadline, "the job outlived its SIGTERM"
    time.sleep(0.1)
  assert log.read_text().endswith("[soundlm] exit status 75\n")
  follow = subprocess.Popen(["bash", os.path.join(ROOT, "launch", "tpu_worker.sh"), "logs",
                             "job1"], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
  try:
    assert follow.stdout.readline() == "[worker 3] args ['a b', \"--x='y'\"]\n"
  finally:
    os.killpg(follow.pid, signal.SIGKILL)  # bash, tail and sed
    follow.wait()
  assert "not running" in worker("stop", "job1").stdout
  assert worker("start", "..", "standin").returncode == 2
