#!/usr/bin/env bash
# Trains on a Cloud TPU VM or pod slice: creates the TPU VM if it does not
# exist, copies this checkout to every worker, installs soundlm with jax[tpu],
# and starts the same training command on all workers, streaming their logs.
# jax.distributed.initialize() picks up the pod's workers automatically.
#
# Usage:
#   bash launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=P] \
#     [--accelerator_type=v4-32] [--runtime_version=tpu-ubuntu2204-base] \
#     [--dry_run] [--help] -- --gin_file=gin/runs/lm_tiny.gin --workdir=gs://bucket/run
# Everything after `--` goes to `python -m soundlm.train` (the decode job
# uses the same launcher with --module=soundlm.decode).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TPU="" ZONE="" PROJECT="" ACCEL="v4-32" RUNTIME="tpu-ubuntu2204-base" DRY_RUN=0
MODULE="soundlm.train"
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator_type=*) ACCEL="${1#*=}" ;;
    --runtime_version=*) RUNTIME="${1#*=}" ;;
    --module=*) MODULE="${1#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (put training flags after --)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$TPU" ] || [ -z "$ZONE" ]; then
  echo "error: --tpu and --zone are required" >&2; exit 2
fi
GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone="$ZONE")
[ -n "$PROJECT" ] && COMMON+=(--project="$PROJECT")
REMOTE_DIR="soundlm"
TRAIN_ARGS="$(printf '%q ' "$@")"
REMOTE_CMD="cd $REMOTE_DIR && SOUNDLM_JAX_EXTRA=tpu source launch/env.sh && python -m $MODULE $TRAIN_ARGS"

run() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [ "$DRY_RUN" = 1 ] || ! "${GCLOUD[@]}" describe "$TPU" "${COMMON[@]}" >/dev/null 2>&1; then
  [ "$DRY_RUN" = 1 ] && echo "# if the TPU VM does not exist yet:"
  run "${GCLOUD[@]}" create "$TPU" "${COMMON[@]}" --accelerator-type="$ACCEL" --version="$RUNTIME"
fi
run "${GCLOUD[@]}" ssh "$TPU" "${COMMON[@]}" --worker=all --command="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR"
run "${GCLOUD[@]}" scp --recurse "${COMMON[@]}" --worker=all \
  setup.py README.md soundlm gin launch "$TPU:$REMOTE_DIR/"
run "${GCLOUD[@]}" ssh "$TPU" "${COMMON[@]}" --worker=all --command="$REMOTE_CMD"
