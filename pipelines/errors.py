"""Errors a user can act on, how to find them under Ray's wrapping, and how a command
reports them (one line on stderr) or its summary (the last stdout line, JSON)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

# Ray Data keeps an error raised in a task only as text in the traceback it re-raises.
_REMOTE_ERROR = re.compile(r"pipelines\.errors\.(DataError|ConfigError): (.+)")


class RayseqError(ValueError):
    """Something the user can fix; the message says what and where."""


class DataError(RayseqError):
    """Bad input data; the message names the file and line (or row)."""


class InputTooLarge(DataError):
    """A client's input over a size limit the model sets (a text longer than the words a
    summarizer reads): a server answers 413, like an oversized body, not 422."""


class ConfigError(RayseqError):
    """A recipe or override is wrong; the message names the key."""


def user_error(exc: BaseException) -> BaseException | None:
    """The first :class:`RayseqError` or ``FileNotFoundError`` in ``exc``'s cause chain.

    Ray wraps exceptions raised in tasks and actors (``RayTaskError``,
    ``UserCodeException``, ``TrainingFailedError``); the CLI prints the user's own
    error, not three tracebacks.
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (RayseqError, FileNotFoundError)):
            return err
        stack.extend([getattr(err, "cause", None), err.__cause__, err.__context__])
        for attr in ("worker_failures", "errors"):
            extra = getattr(err, attr, None)
            if isinstance(extra, dict):
                stack.extend(extra.values())
            elif isinstance(extra, (list, tuple)):
                stack.extend(extra)
    match = _REMOTE_ERROR.search(str(exc))
    if match:
        return {"DataError": DataError, "ConfigError": ConfigError}[match.group(1)](match.group(2).strip())
    return None


def run_and_report(command: Callable[[], dict[str, Any] | None]) -> int:
    """Run ``command``; print its summary as the last stdout line, or a one-line error."""
    connected = _ray_connected()  # a caller's own Ray connection is left alone
    try:
        summary = command()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - turned into a one-line message below
        error = user_error(exc)
        if error is None:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"rayseq: error: {message}", file=sys.stderr)
        return 2
    if summary is not None:
        if not connected and _ray_connected():
            # Until the driver leaves, Ray streams cluster log lines to its stdout (a
            # raylet's worker-start warning, deduplicated worker logs): one printed after
            # the summary would break "the last line is the JSON summary". On a cluster
            # this only disconnects; a local instance the command started ends.
            sys.modules["ray"].shutdown()
        print(json.dumps(summary), flush=True)
    return 0


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
