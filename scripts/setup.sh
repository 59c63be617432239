#!/usr/bin/env bash
# Create .venv (if missing) and install rayseq with its pinned dependencies. A stamp of
# what was installed (pyproject.toml + constraints.txt) skips the install when nothing
# changed: rayseq is installed editable, so code changes need no reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/rayseq-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
here=$(pwd -P)
installed=$(cd / && "$here/.venv/bin/python" -c "import pipelines, os; print(os.path.dirname(os.path.dirname(os.path.realpath(pipelines.__file__))))" 2>/dev/null || true)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ "$installed" = "$here" ]; then
  exit 0  # installed, from this checkout, with these pins
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Keep pip's byte-compiling (30 of a fresh install's 80 s here): machines that set
# PYTHONDONTWRITEBYTECODE=1 (this one does) never write .pyc files themselves, so without
# pip's every process, each Ray worker included, compiles torch and Ray from source (tried:
# the suite's load average went from ~8 to 60).
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
echo "$wanted" > "$stamp"
