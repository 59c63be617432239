#!/usr/bin/env bash
# Install (as the quickstart does), lint with ruff, and run the whole test suite; extra args go to pytest
# (then one pytest run takes them all). `bash scripts/test.sh fast`: the tests without Ray only,
# in two pytest processes, each every other test.
#
# With no arguments the tests without Ray run in one pytest process while the tests that
# need Ray run beside it: first the files that start a Ray head of their own, then one
# shared head (tests/ray_session.py) and two pytest processes on it, each a shard of the
# Ray tier's files (balanced by measured seconds; the Serve files in one shard). The Ray
# tier mostly waits on process start-ups, so the three fit beside each other on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first (seconds): a ruff finding fails the run before any test starts ([tool.ruff] in pyproject.toml).
.venv/bin/ruff check .
fast=
if [ "${1:-}" = "fast" ] && [ "$#" -eq 1 ]; then
  fast=1
elif [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
work=$(mktemp -d)
head="$work/ray-head.json"
stop_head() { if [ -f "$head" ]; then .venv/bin/python tests/ray_session.py stop "$head" || true; fi; }
trap 'stop_head; rm -rf "$work"' EXIT
tier() {  # tier NAME PYTEST_ARGS...: one pytest process, its own temp folder
  local name=$1; shift
  .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/tmp-$name" "$@"
}
if [ -n "$fast" ]; then
  # Two processes, one a core (measured, the same tests: one process 6 min 50 s, two 5 min
  # 29 s, three 5 min 44 s: each process trains the session's tiny models again).
  RAYSEQ_FAST_SHARD=2/2 tier fast-2 -m "not ray" > "$work/fast-2.log" 2>&1 &
  second=$!
  set +e
  RAYSEQ_FAST_SHARD=1/2 tier fast-1 -m "not ray"
  status=$?
  wait "$second" || status=1
  set -e
  echo
  echo "================ the other half (ran alongside) ================"
  cat "$work/fast-2.log"
  exit "$status"
fi
tier no-ray -m "not ray" > "$work/no-ray.log" 2>&1 &
no_ray=$!
set +e
RAYSEQ_TEST_SHARD=own tier own-head -m ray
own_status=$?
.venv/bin/python tests/ray_session.py start "$head"
RAYSEQ_TEST_HEAD=$head RAYSEQ_TEST_SHARD=2/2 tier ray-2 -m ray > "$work/ray-2.log" 2>&1 &
shard_2=$!
RAYSEQ_TEST_HEAD=$head RAYSEQ_TEST_SHARD=1/2 tier ray-1 -m ray
shard_1_status=$?
wait "$shard_2"
shard_2_status=$?
stop_head
rm -f "$head"
wait "$no_ray"
no_ray_status=$?
set -e
for log in ray-2 no-ray; do
  echo
  echo "================ $log (ran alongside) ================"
  cat "$work/$log.log"
done
echo "tests that need Ray: own head exit $own_status, shard 1 exit $shard_1_status, shard 2 exit $shard_2_status;" \
  "tests without Ray: exit $no_ray_status"
[ "$own_status" -eq 0 ] && [ "$shard_1_status" -eq 0 ] && [ "$shard_2_status" -eq 0 ] && [ "$no_ray_status" -eq 0 ]
