#!/usr/bin/env bash
# The README's first command: trains tiny versions of every model on the
# built-in corpus through the project's entry points, then generates speech
# and piano continuations (python -m soundlm.quickstart; about 8 minutes on a
# 2-core CPU). Steps whose outputs exist are skipped, so a rerun resumes.
# Usage: bash launch/quickstart.sh [output folder, default outputs/quickstart]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-outputs/quickstart}"
source launch/env.sh
python -m soundlm.quickstart --out "$OUT"
echo "[soundlm] done: audio, spectrograms and report.md in $OUT"
