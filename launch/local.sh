#!/usr/bin/env bash
# Trains on this machine's devices.
# Usage: bash launch/local.sh --gin_file=gin/runs/lm_tiny.gin --workdir=/tmp/run [--gin_bindings=...]
#        add --dry_run to print the command instead of running it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY_RUN=0
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--dry_run" ]; then DRY_RUN=1; else ARGS+=("$arg"); fi
done
CMD=(python -m soundlm.train "${ARGS[@]}")
if [ "$DRY_RUN" = 1 ]; then printf '%q ' "${CMD[@]}"; echo; exit 0; fi
source launch/env.sh
exec "${CMD[@]}"
