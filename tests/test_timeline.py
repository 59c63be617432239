"""Timeline arithmetic and trace output. No Ray."""

from __future__ import annotations

import json

import pytest

from pipelines.engine.timeline import bubble_fraction, theoretical_bubble, write_chrome_trace


def ideal_gpipe(pp: int, m: int, unit: float = 1.0) -> dict[int, list[tuple]]:
    """Spans of an ideal fill-drain step: forward and backward each take ``unit``."""
    stages = {}
    for s in range(pp):
        spans = [("forward", 0, i, (s + i) * unit, (s + i + 1) * unit) for i in range(m)]
        back0 = (m + pp - 1) * unit
        spans += [("backward", 0, i, back0 + (pp - 1 - s + j) * unit, back0 + (pp - s + j) * unit)
                  for j, i in enumerate(reversed(range(m)))]
        stages[s] = spans
    return stages


@pytest.mark.parametrize("pp, m", [(2, 4), (3, 6), (4, 4)])
def test_ideal_schedule_bubble_equals_theory(pp, m):
    assert bubble_fraction(ideal_gpipe(pp, m)) == pytest.approx(theoretical_bubble(pp, m))


def test_communication_counts_as_bubble_and_partial_steps_are_ignored():
    stages = {0: [("forward", 0, 0, 0.0, 1.0), ("send", 0, 0, 1.0, 2.0)], 1: [("forward", 0, 0, 2.0, 3.0)]}
    assert bubble_fraction(stages) == pytest.approx(2 / 3)
    stages[0].append(("forward", 1, 0, 5.0, 6.0))  # step 1 only on stage 0
    assert bubble_fraction(stages) == pytest.approx(2 / 3)


def test_chrome_trace_has_one_row_per_stage(tmp_path):
    path = tmp_path / "t.json"
    write_chrome_trace(ideal_gpipe(2, 2), path)
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == 8 and {e["tid"] for e in spans} == {0, 1}
    assert min(e["ts"] for e in spans) == 0 and all(e["dur"] > 0 for e in spans)
