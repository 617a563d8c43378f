#!/usr/bin/env bash
# Trains on a multi-node GPU cluster under SLURM: writes an sbatch script that
# starts one process per node (all local GPUs each) with srun, and submits it.
# jax.distributed.initialize() reads the SLURM environment for the
# coordinator and process ids.
#
# Usage:
#   bash launch/slurm_gpu.sh --nodes=2 [--gpus_per_node=8] [--partition=P] \
#     [--time=24:00:00] [--dry_run] -- --gin_file=... --workdir=/shared/run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NODES=1 GPUS=8 PARTITION="" TIME="24:00:00" DRY_RUN=0 MODULE="soundlm.train"
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes=*) NODES="${1#*=}" ;;
    --gpus_per_node=*) GPUS="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --module=*) MODULE="${1#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (put training flags after --)" >&2; exit 2 ;;
  esac
  shift
done
TRAIN_ARGS="$(printf '%q ' "$@")"
SCRIPT="$(cat <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=soundlm
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --time=$TIME
${PARTITION:+#SBATCH --partition=$PARTITION}
#SBATCH --output=soundlm-%j.log
set -euo pipefail
cd "$(pwd)"
SOUNDLM_JAX_EXTRA=cuda12 source launch/env.sh
srun python -m $MODULE $TRAIN_ARGS
SBATCH
)"
if [ "$DRY_RUN" = 1 ]; then
  echo "$SCRIPT"
  echo "# submit with: sbatch <script above>"
else
  echo "$SCRIPT" | sbatch
fi
