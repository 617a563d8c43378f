#!/usr/bin/env bash
# Creates (once) and activates the project's virtual environment in .venv.
# Re-installs only when setup.py or this file changes. Source it: `source launch/env.sh`.
# Installs the test and eval extras (pytest, the GCS emulator, ViSQOL/PESQ/STOI)
# and Resemblyzer without its dependencies: only its voice encoder's weights,
# which soundlm.evaluation.speaker reads without torch.
# Set SOUNDLM_JAX_EXTRA=tpu or cuda12 to install accelerator builds of jaxlib.
# (No `set -e` here: this file is sourced.)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOUNDLM_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[soundlm] creating virtual environment in $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.soundlm-installed"
WANT="$(cat "$REPO_ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)-${SOUNDLM_JAX_EXTRA:-cpu}"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[soundlm] installing soundlm and its dependencies (a few minutes the first time)" >&2
  # Stamped only when every install succeeded, so a failed one is retried.
  if "$VENV/bin/python" -m pip install --quiet --upgrade pip \
      && "$VENV/bin/python" -m pip install --quiet -e "$REPO_ROOT[test,eval]" \
      && "$VENV/bin/python" -m pip install --quiet --no-deps "resemblyzer==0.1.4" \
      && { [ -z "${SOUNDLM_JAX_EXTRA:-}" ] \
           || "$VENV/bin/python" -m pip install --quiet "jax[${SOUNDLM_JAX_EXTRA}]"; }; then
    echo "$WANT" > "$STAMP"
  else
    echo "[soundlm] ERROR: pip install into $VENV failed (output above); not marked installed" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
