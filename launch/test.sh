#!/usr/bin/env bash
# Runs the test suite on CPU with 8 virtual devices (tests/conftest.py sets them).
# Usage: bash launch/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/env.sh
exec python -m pytest -n "${SOUNDLM_TEST_WORKERS:-2}" --dist loadgroup --durations=15 tests "$@"
