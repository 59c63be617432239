#!/usr/bin/env bash
# The main job end to end on the embedded default: install, start a local Ray, generate
# data, train, evaluate, serve over HTTP, send a real request, print the answer, shut down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pipelines.quickstart "$@"
