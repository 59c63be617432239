"""What every benchmark report records about where it ran, and how it is written."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any


def run_info(**machine: Any) -> dict[str, Any]:
    """``date``, ``command`` and ``machine`` (CPUs, platform, versions, load average now;
    ``machine`` adds or overrides fields, e.g. the torch threads a benchmark used)."""
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "machine": {**info, **machine},
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """``report`` as indented JSON at ``path`` (folders made), and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
