#!/usr/bin/env bash
# What launch/tpu_pod.sh runs on each TPU VM worker (copied there with the
# code), so that a job outlives the ssh session that started it.
#
# Usage (on a worker, from the copied checkout):
#   bash launch/tpu_worker.sh install
#   bash launch/tpu_worker.sh start JOB MODULE [ARGS...]
#   bash launch/tpu_worker.sh logs JOB
#   bash launch/tpu_worker.sh stop JOB
#   bash launch/tpu_worker.sh check JOB
#
# install: uv (from PyPI) and a Python >= 3.11 virtual environment in
#   $SOUNDLM_VENV (default ~/soundlm-venv), kept across launches; soundlm and
#   jax[tpu] are (re)installed into it, which is quick once the dependencies
#   are there.
# start: runs `python -m MODULE ARGS` detached (setsid nohup), output in
#   $SOUNDLM_LOGS/JOB/worker-<N>.log (default ~/soundlm-logs), N the worker
#   number from the metadata server ($TPU_WORKER_ID where set). The log ends
#   with `[soundlm] exit status S`: 0 done, 75 preempted (relaunch to resume).
#   Refused while JOB still runs here.
# logs: follows this worker's log, each line prefixed with the worker.
# stop: SIGTERM to the job's process group: training saves its step and
#   exits 75, so launching it again resumes.
# check: fails while JOB still runs here (before its code is replaced).
set -euo pipefail
CODE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOUNDLM_VENV:-$HOME/soundlm-venv}"
LOGS="${SOUNDLM_LOGS:-$HOME/soundlm-logs}"
PYTHON_VERSION="${SOUNDLM_PYTHON_VERSION:-3.11}"
METADATA="http://metadata.google.internal/computeMetadata/v1/instance/attributes"

usage() { echo "usage: tpu_worker.sh install | start JOB MODULE [ARGS...] | logs JOB | stop JOB | check JOB" >&2; exit 2; }

worker_id() {
  if [ -n "${TPU_WORKER_ID:-}" ]; then echo "$TPU_WORKER_ID"; return; fi
  curl -sf --max-time 5 -H Metadata-Flavor:Google "$METADATA/agent-worker-number" \
    || { echo "error: no TPU_WORKER_ID and no metadata server; is this a TPU VM?" >&2; exit 1; }
}

# The job's process group id if it still runs on this worker, else nothing.
running_pid() {
  local pid_file="$LOGS/$1/pid"
  [ -f "$pid_file" ] && kill -0 -- "-$(cat "$pid_file")" 2>/dev/null && cat "$pid_file"
  return 0
}

refuse_if_running() {
  local pid
  pid="$(running_pid "$1")"
  if [ -n "$pid" ]; then
    echo "error: job $1 still runs on $(hostname) (process group $pid); stop it first" >&2
    exit 1
  fi
}

job_name() {
  case "$1" in
    ""|*/*|.*) echo "error: job name must be a plain name, got '$1'" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  install)
    export PATH="$HOME/.local/bin:$PATH"
    if ! command -v uv >/dev/null; then
      # PIP_BREAK_SYSTEM_PACKAGES: Ubuntu 24.04 images refuse user installs otherwise.
      PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet uv
    fi
    [ -x "$VENV/bin/python" ] || uv venv --python "$PYTHON_VERSION" "$VENV"
    uv pip install --python "$VENV/bin/python" --quiet -e "$CODE" "jax[tpu]"
    "$VENV/bin/python" -c "import sys; assert sys.version_info >= (3, 11), sys.version"
    ;;
  start)
    [ $# -ge 3 ] || usage
    job="$2" module="$3"
    job_name "$job"
    shift 3
    refuse_if_running "$job"
    mkdir -p "$LOGS/$job"
    log="$LOGS/$job/worker-$(worker_id).log"
    cd "$CODE"
    # setsid: the job leads its own process group, which `stop` signals whole;
    # the wrapper outlives that SIGTERM to record python's exit status.
    TF_CPP_MIN_LOG_LEVEL=2 setsid nohup bash -c '
      trap : TERM
      "$0" -m "$@" & child=$!
      while :; do wait "$child"; status=$?; kill -0 "$child" 2>/dev/null || break; done
      echo "[soundlm] exit status $status"' \
      "$VENV/bin/python" "$module" "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$LOGS/$job/pid"
    echo "started $job (process group $!), log $log"
    ;;
  logs)
    [ $# -eq 2 ] || usage
    job_name "$2"
    id="$(worker_id)"
    tail -n 200 -F "$LOGS/$2/worker-$id.log" | sed -u "s/^/[worker $id] /"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    job_name "$2"
    pid="$(running_pid "$2")"
    if [ -z "$pid" ]; then
      echo "job $2 is not running here"
    else
      kill -TERM -- "-$pid"
      echo "sent SIGTERM to job $2 (process group $pid)"
    fi
    ;;
  check)
    [ $# -eq 2 ] || usage
    job_name "$2"
    refuse_if_running "$2"
    ;;
  *) usage ;;
esac
