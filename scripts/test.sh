#!/usr/bin/env bash
# Install (as the quickstart does), lint with ruff, and run the whole test suite; extra args go to pytest
# (then one pytest run takes them all, e.g. `-m "not ray"` for the tests without Ray).
#
# With no arguments the two tiers run at once, in two pytest processes: the tests that
# need Ray (one session head, in order) and those that do not. The Ray tier mostly waits
# on process start-ups, so the other tier fits beside it on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first (seconds): a ruff finding fails the run before any test starts ([tool.ruff] in pyproject.toml).
.venv/bin/ruff check .
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pytest -q -m "not ray" -p no:cacheprovider --basetemp="$work/tmp" > "$work/no-ray.log" 2>&1 &
no_ray=$!
set +e
.venv/bin/python -m pytest -q -m ray
ray_status=$?
wait "$no_ray"
no_ray_status=$?
set -e
echo
echo "================ tests without Ray (run alongside) ================"
cat "$work/no-ray.log"
echo "tests that need Ray: exit $ray_status; tests without Ray: exit $no_ray_status"
[ "$ray_status" -eq 0 ] && [ "$no_ray_status" -eq 0 ]
