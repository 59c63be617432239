#!/usr/bin/env bash
# The CUDA paths on one GPU (issue 26): equivalence of a pp=2 pipeline sharing the GPU,
# one process on GPU vs CPU, Multi30k training tokens/s (GPU vs CPU, bf16), a Serve
# replica on the GPU. Prints one JSON line; about 3-5 minutes on an H100.
#   bash scripts/gpu_check.sh            # on a GPU machine (installs what it needs)
#   bash scripts/gpu_check.sh --device cpu --quick   # the same code on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh >&2
fi
exec .venv/bin/python scripts/gpu_check.py "$@"
