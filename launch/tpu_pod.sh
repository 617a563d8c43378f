#!/usr/bin/env bash
# Runs a soundlm job on a Cloud TPU VM or pod slice: creates the TPU VM if it
# does not exist, copies this checkout to ~/soundlm on every worker, installs
# a Python 3.11 environment with uv in ~/soundlm-venv (kept across launches),
# and starts `python -m MODULE` detached on all workers, each writing
# ~/soundlm-logs/JOB/worker-<N>.log. jax.distributed.initialize() finds the
# pod's workers itself.
#
# Usage:
#   bash launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=P] \
#     [--accelerator_type=v4-32] [--runtime_version=VERSION] [--spot] \
#     [--module=soundlm.train] [--job=NAME] [--dry_run] -- TRAINING FLAGS
#   bash launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--job=NAME] --logs
#   bash launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--job=NAME] --stop
#
# Everything after `--` goes to `python -m MODULE` (launch/decode_tpu.sh is
# this launcher with --module=soundlm.decode). --job names the log folder
# (default: the module's last part, e.g. train); a job still running on a
# worker is not started again. --logs follows every worker's log; --stop sends
# SIGTERM to the job on every worker, so training saves its step and exits 75
# (the same as a preemption): launch the same command again to resume.
# --runtime_version defaults to the TPU VM image for the accelerator
# (tpu-ubuntu2204-base for v2-v4, v2-alpha-tpuv5-lite for v5litepod,
# v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e). --spot creates a Spot VM
# (cheaper, preemptible). --dry_run prints every command instead of running it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TPU="" ZONE="" PROJECT="" ACCEL="v4-32" RUNTIME="" SPOT=0 DRY_RUN=0 ACTION=start
MODULE="soundlm.train" JOB=""
fail() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator_type=*) ACCEL="${1#*=}" ;;
    --runtime_version=*) RUNTIME="${1#*=}" ;;
    --module=*) MODULE="${1#*=}" ;;
    --job=*) JOB="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --logs) ACTION=logs ;;
    --stop) ACTION=stop ;;
    --dry_run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    --) shift; break ;;
    *) fail "unknown option $1 (put the job's flags after --; see --help)" ;;
  esac
  shift
done
[ -n "$TPU" ] && [ -n "$ZONE" ] || fail "--tpu and --zone are required (see --help)"
[[ "$MODULE" =~ ^[a-z_][a-z0-9_.]*$ ]] || fail "--module must be a Python module name, got '$MODULE'"
JOB="${JOB:-${MODULE##*.}}"
[[ "$JOB" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || fail "--job must be a plain name, got '$JOB'"
if [ "$ACTION" != start ] && [ $# -gt 0 ]; then
  fail "--$ACTION takes no job flags, got: $*"
fi
if [ "$ACTION" = start ] && [ $# -eq 0 ]; then
  fail "no job flags: put them after -- (e.g. -- --gin_file=... --workdir=gs://bucket/run)"
fi
if [ -z "$RUNTIME" ]; then
  case "$ACCEL" in
    v2-*|v3-*|v4-*) RUNTIME="tpu-ubuntu2204-base" ;;
    v5litepod-*) RUNTIME="v2-alpha-tpuv5-lite" ;;
    v5p-*) RUNTIME="v2-alpha-tpuv5" ;;
    v6e-*) RUNTIME="v2-alpha-tpuv6e" ;;
    *) fail "no default --runtime_version for --accelerator_type=$ACCEL; give one" ;;
  esac
fi

GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone="$ZONE")
[ -n "$PROJECT" ] && COMMON+=(--project="$PROJECT")
WORKER="bash soundlm/launch/tpu_worker.sh"

# One argument as the shell reads it: bare when safe, else in single quotes.
shell_word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
run() {
  if [ "$DRY_RUN" = 0 ]; then "$@"; return; fi
  local sep=""
  for word in "$@"; do printf '%s' "$sep"; shell_word "$word"; sep=" "; done
  echo
}
on_workers() { run "${GCLOUD[@]}" ssh "$TPU" "${COMMON[@]}" --worker=all --command="$1"; }

case "$ACTION" in
  logs) on_workers "$WORKER logs $JOB"; exit 0 ;;
  stop) on_workers "$WORKER stop $JOB"; exit 0 ;;
esac

if [ "$DRY_RUN" = 1 ] || ! "${GCLOUD[@]}" describe "$TPU" "${COMMON[@]}" >/dev/null 2>&1; then
  [ "$DRY_RUN" = 1 ] && echo "# if the TPU VM does not exist yet:"
  CREATE=("${GCLOUD[@]}" create "$TPU" "${COMMON[@]}" --accelerator-type="$ACCEL"
          --version="$RUNTIME")
  [ "$SPOT" = 1 ] && CREATE+=(--spot)
  run "${CREATE[@]}"
fi
# Refuses while the job runs (its code would vanish), then refreshes the code;
# the environment in ~/soundlm-venv stays.
on_workers "if [ -f soundlm/launch/tpu_worker.sh ]; then $WORKER check $JOB; fi && rm -rf soundlm && mkdir soundlm"
run "${GCLOUD[@]}" scp --recurse "${COMMON[@]}" --worker=all \
  setup.py README.md soundlm gin launch "$TPU:soundlm/"
on_workers "$WORKER install"
on_workers "$WORKER start $JOB $MODULE $(printf '%q ' "$@" | sed 's/ $//')"
echo "# follow the logs: bash launch/tpu_pod.sh --tpu=$TPU ${COMMON[*]} --job=$JOB --logs"
