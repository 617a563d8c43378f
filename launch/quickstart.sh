#!/usr/bin/env bash
# The README's first command: a small sharded training run of a tiny model
# (a causal Transformer LM on Markov-chain tokens, data-parallel over 8 virtual
# CPU devices) writing checkpoints, metrics and TensorBoard events.
# Usage: bash launch/quickstart.sh [output folder, default outputs/quickstart]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-outputs/quickstart}"
source launch/env.sh
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
python -m soundlm.train --gin_file=gin/runs/lm_tiny.gin --workdir="$OUT"
echo "[soundlm] done: checkpoints, metrics.jsonl and tensorboard/ in $OUT"
