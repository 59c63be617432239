"""Adaptive batching: a request that finds nobody to batch with runs at once.

``@serve.batch`` (Ray 2.60) cuts every batch on a timer: its first item waits the whole
``batch_wait_timeout_s`` for company, even when none is coming, and the next batch is
cut on the same timer while the previous one still runs, so under load the batches
that queue up behind a running one hold only what arrived in one timer window. At one
client that is the wait plus the batcher's own cost on every request (bench/README.md,
"serve").

:class:`AdaptiveBatcher` cuts a batch when the model is free, from what is queued:

- **One batch at a time.** Items that arrive while a batch runs queue up, and the next
  batch takes them all (up to the budget) the moment the model is free: under load the
  batch size follows the load, with no timer involved.
- **Wait only for company that is coming.** The model is free, and either requests are
  on their way (:meth:`AdaptiveBatcher.coming`: accepted, their inputs still being read,
  e.g. uploads decoded in a worker thread) or the queue holds fewer items than the last
  batch did (the clients it answered are likely to send again, as closed-loop clients
  do): wait for them, until none is on its way and the queue holds as many, the budget
  is full, or ``wait_s`` has passed since the oldest queued item arrived. Otherwise run
  at once: after a batch of one (one client, light traffic), after a batch that left a
  backlog (the next is already queued), or when the oldest item came more than
  ``wait_s`` after the last batch finished (its clients would be back by then), a
  request never waits; items that arrive together (one event-loop turn) share a batch
  anyway. So a lone request waits at most once, right after a burst, and at most
  ``wait_s``.
- **Token budget.** A batch holds items in arrival order while their summed ``cost``
  (``serving.deployments.item_cost``: row units x beam) fits ``budget``; the first
  item that does not fit starts the next batch (the order is kept: nothing overtakes
  it). An item costing more than the whole budget fails at once, as ``@serve.batch``
  fails it.
- **Answers and errors.** ``run(items)`` returns one answer per item, in order; if it
  raises (or returns the wrong number of answers), every caller in that batch gets the
  error. A caller that was cancelled while queued (its client went away) is dropped
  before its batch runs.

``wait_s`` is thus the most a request waits for company beyond waiting for the model
(``ServeLimits.batch_wait_timeout_s``); 0 never waits. Everything runs on the event
loop that calls the batcher (no locks): build it in the replica, per model, as
``@serve.batch`` would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending:
    item: Any
    cost: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class AdaptiveBatcher(Generic[T, R]):
    """``await batcher(item)`` -> ``run([..., item, ...])``'s answer for ``item``; see
    the module docstring."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], *, budget: int, wait_s: float,
                 cost: Callable[[T], int]) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.run, self.budget, self.wait_s, self.cost = run, budget, wait_s, cost
        self._queue: deque[_Pending] = deque()
        self._queued_cost = 0
        self._expected = 0
        """Items the last batch held, if they were all that was queued (0 when it left a
        backlog): the company a new batch may wait for."""
        self._last_done = float("-inf")
        """When the last batch finished (``time.monotonic``)."""
        self._coming = 0
        """Requests inside :meth:`coming`: on their way to the queue."""
        self._wakeup: asyncio.Future | None = None
        """Set while the dispatcher sleeps (idle, or waiting for company): an arrival wakes it."""
        self._dispatcher: asyncio.Task | None = None
        self.waits = 0
        """Batches that waited for company (observability and tests)."""

    async def __call__(self, item: T) -> R:
        cost = self.cost(item)
        if cost > self.budget:
            raise RuntimeError(f"an item of size {cost} is larger than a whole batch ({self.budget})")
        loop = asyncio.get_running_loop()
        pending = _Pending(item, cost, loop.create_future())
        self._queue.append(pending)
        self._queued_cost += cost
        if self._dispatcher is None or self._dispatcher.done():
            # a context of its own: batches must not run in their first caller's (Serve's request context)
            self._dispatcher = contextvars.Context().run(loop.create_task, self._dispatch())
        else:
            self._wake()
        return await pending.future

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Around the work between accepting a request and queueing its items (reading
        its inputs): a batch that could run meanwhile waits (at most ``wait_s``) for it."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _dispatch(self) -> None:
        """Run batches until the queue is empty (the next arrival starts a new dispatcher)."""
        try:
            await asyncio.sleep(0)  # one loop turn: items arriving together (a burst read at once) share the batch
            while self._queue:
                await self._gather()
                batch = self._take()
                if batch:
                    self._expected = 0 if self._queue else len(batch)  # a backlog: the next batch is already there
                    await self._run(batch)
                    self._last_done = time.monotonic()
        except BaseException as exc:  # cancelled (the loop is closing): no caller may wait forever
            while self._queue:
                pending = self._queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError(f"the batcher stopped: {exc!r}"))
            self._queued_cost = 0
            raise
        finally:
            self._dispatcher = None

    async def _gather(self) -> None:
        """Wait for company while some is coming, the budget has room and the oldest
        queued item has waited less than ``wait_s``."""
        loop = asyncio.get_running_loop()
        waited = False
        while (self._company_coming() and self._queued_cost < self.budget
               and (remaining := self._queue[0].arrived + self.wait_s - time.monotonic()) > 0):
            waited = True
            self._wakeup = loop.create_future()
            timer = loop.call_later(remaining, _resolve, self._wakeup)
            try:
                await self._wakeup
            finally:
                timer.cancel()
                self._wakeup = None
        self.waits += waited

    def _company_coming(self) -> bool:
        """Requests on their way (:meth:`coming`), or fewer queued than the last batch held
        while its clients may still come back: the oldest queued item came within
        ``wait_s`` of that batch finishing (later, they would be back already)."""
        if self._coming:
            return True
        return len(self._queue) < self._expected and self._queue[0].arrived - self._last_done <= self.wait_s

    def _take(self) -> list[_Pending]:
        """The queue's head, in order, while it fits the budget (cancelled callers dropped)."""
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled while queued
                self._queue.popleft()
                self._queued_cost -= head.cost
                continue
            if batch and size + head.cost > self.budget:
                break
            self._queue.popleft()
            self._queued_cost -= head.cost
            batch.append(head)
            size += head.cost
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            answers = await self.run([pending.item for pending in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"the batch function returned {len(answers)} answers for {len(batch)} items")
        except BaseException as exc:  # every caller of the batch gets it
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for pending, answer in zip(batch, answers):
            if not pending.future.done():
                pending.future.set_result(answer)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
