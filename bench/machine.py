"""What every benchmark report records about where it ran."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
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
