"""Per-stage timelines of a pipeline run: spans, Chrome trace, Gantt chart, bubble.

Each stage records ``(kind, step, micro, start_s, end_s)`` spans (wall-clock seconds, so
stages in different processes line up) for ``forward``, ``backward``, ``send`` and
``recv``. The bubble of one step is, per stage, the part of the step's window (first
span start to last span end over all stages) not spent in forward or backward; the run's
figure averages stages and steps. With equal stages it approaches the GPipe/1F1B theory
``(p - 1) / (m + p - 1)``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

COMPUTE = ("forward", "backward")
COLORS = {"forward": "tab:blue", "backward": "tab:green", "send": "tab:orange", "recv": "tab:red"}


@dataclass
class Timeline:
    """Spans of one stage; recording is off unless ``enabled``."""

    stage: int = 0
    enabled: bool = False
    step: int = 0
    spans: list[tuple[str, int, int, float, float]] = field(default_factory=list)

    @staticmethod
    def now() -> float:
        return time.time()

    def record(self, kind: str, micro: int, start: float) -> None:
        if self.enabled:
            self.spans.append((kind, self.step, micro, start, time.time()))

    def to_json(self) -> str:
        return json.dumps({"stage": self.stage, "spans": self.spans})


def load_timelines(paths: list[Path]) -> dict[int, list[tuple[str, int, int, float, float]]]:
    stages = {}
    for path in paths:
        data = json.loads(path.read_text())
        stages[int(data["stage"])] = [tuple(span) for span in data["spans"]]
    return stages


def bubble_fraction(stages: dict[int, list[tuple]]) -> float:
    """Mean over steps and stages of ``1 - compute / step window``."""
    by_step: dict[int, dict[int, list[tuple]]] = defaultdict(dict)
    for stage, spans in stages.items():
        for span in spans:
            by_step[span[1]].setdefault(stage, []).append(span)
    fractions = []
    for step_spans in by_step.values():
        if len(step_spans) != len(stages):
            continue  # a step not recorded by every stage
        all_spans = [s for spans in step_spans.values() for s in spans]
        window = max(s[4] for s in all_spans) - min(s[3] for s in all_spans)
        if window <= 0:
            continue
        for spans in step_spans.values():
            busy = sum(s[4] - s[3] for s in spans if s[0] in COMPUTE)
            fractions.append(1.0 - busy / window)
    return sum(fractions) / len(fractions) if fractions else 0.0


def theoretical_bubble(pp: int, microbatches: int) -> float:
    return (pp - 1) / (microbatches + pp - 1)


def write_chrome_trace(stages: dict[int, list[tuple]], path: Path) -> None:
    """Chrome trace event JSON (open in Perfetto or chrome://tracing); one row per stage."""
    origin = min((s[3] for spans in stages.values() for s in spans), default=0.0)
    events = [
        {"name": f"{kind} {micro}", "cat": kind, "ph": "X", "pid": 0, "tid": stage,
         "ts": (start - origin) * 1e6, "dur": (end - start) * 1e6, "args": {"step": step, "micro": micro}}
        for stage, spans in stages.items() for kind, step, micro, start, end in spans
    ]
    events += [{"name": "thread_name", "ph": "M", "pid": 0, "tid": stage, "args": {"name": f"stage {stage}"}}
               for stage in stages]
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))


def plot_gantt(stages: dict[int, list[tuple]], path: Path, title: str, last_steps: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({s[1] for spans in stages.values() for s in spans})[-last_steps:]
    shown = {stage: [s for s in spans if s[1] in steps] for stage, spans in stages.items()}
    origin = min((s[3] for spans in shown.values() for s in spans), default=0.0)
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.55 * len(stages)))
    for stage, spans in shown.items():
        for kind, _, micro, start, end in spans:
            ax.barh(stage, (end - start) * 1e3, left=(start - origin) * 1e3, color=COLORS[kind],
                    edgecolor="black" if kind in COMPUTE else "none", linewidth=0.3)
            if kind in COMPUTE and (end - start) * 1e3 > 0:
                ax.text((start + end) / 2 * 1e3 - origin * 1e3, stage, str(micro), ha="center", va="center", fontsize=6)
    ax.set_yticks(sorted(stages), [f"stage {s}" for s in sorted(stages)])
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    ax.legend(handles, list(COLORS), loc="upper right", fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
