"""Saying a training failure in one line where the user looks: Ray Train logs its retry
decision and the worker's traceback at INFO (``--verbose`` shows them), so without this a
quiet console would only show the restart's "resumed from checkpoint" line."""

from __future__ import annotations

import sys

from ray.train import UserCallback


def failure_line(rank: int, error: BaseException, max_failures: int) -> str:
    """``worker RANK failed: Type: message`` with what happens next. Ray wraps a worker's
    exception with its traceback: the last non-empty line is the original error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = lines[-1] if lines else type(error).__name__
    if len(said) > 200:  # Ray's own explanations run to a paragraph: the first sentence says it
        said = said.split(". ")[0] + " ..."
    return (f"training: worker {rank} failed: {said} (Ray Train restarts the worker group from the latest "
            f"checkpoint, up to {max_failures} times; --verbose shows the traceback)")


class FailureReport(UserCallback):
    """Runs in Ray Train's controller, whose output reaches the driver's console."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        for rank, error in sorted(worker_exceptions.items()):
            print(failure_line(rank, error, self.max_failures), file=sys.stderr, flush=True)
