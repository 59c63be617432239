"""The adaptive batcher (``serving.batcher``), without Ray: a lone request runs at once
whatever the batch wait, concurrent ones share batches within the token budget, in
order, and errors reach every caller of their batch. Then the same through a model
server (``serving.deployments.ModelServer``) on a real checkpoint.

The assertions are on the mechanism (which items ran together, whether a batch waited),
with waits far longer than any machine's delay, so a slow machine cannot fail them."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.batcher import AdaptiveBatcher

LONG = 30.0
"""A batch wait no test may sit through: finishing well within it shows nobody waited."""


class Model:
    """A batch function that records its batches; ``gate`` (when set) holds each batch
    until released, so a test can queue items behind a running batch."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on!r}")
        return [f"answer {item}" for item in items]


def batcher(model: Model, *, budget: int = 100, wait_s: float = LONG, cost=lambda item: 1) -> AdaptiveBatcher:
    return AdaptiveBatcher(model, budget=budget, wait_s=wait_s, cost=cost)


def run(coro, timeout: float = 10.0):
    """Run ``coro``; a test stuck in a batch wait fails here instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_a_lone_request_runs_at_once_whatever_the_wait():
    async def main():
        model = Model()
        batch = batcher(model)
        started = time.monotonic()
        answers = [await batch(i) for i in range(5)]  # one client: each request alone
        return model, batch, answers, time.monotonic() - started

    model, batch, answers, elapsed = run(main())
    assert answers == [f"answer {i}" for i in range(5)]
    assert model.batches == [[0], [1], [2], [3], [4]]
    assert batch.waits == 0  # no batch waited for company ...
    assert elapsed < LONG / 3  # ... so none sat through the 30 s wait


def test_requests_arriving_together_share_one_batch_without_waiting():
    async def main():
        model = Model()
        batch = batcher(model)
        answers = await asyncio.gather(*(batch(i) for i in range(8)))
        return model, batch, answers

    model, batch, answers = run(main())
    assert answers == [f"answer {i}" for i in range(8)]
    assert model.batches == [list(range(8))]
    assert batch.waits == 0


def test_requests_queued_behind_a_running_batch_form_the_next_one():
    async def main():
        model = Model()
        model.gate = asyncio.Event()
        batch = batcher(model, wait_s=0)  # no timer at all: the running batch is what gathers them
        first = asyncio.ensure_future(batch("a"))
        await model.started.wait()  # "a" runs alone ...
        rest = [asyncio.ensure_future(batch(i)) for i in range(5)]  # ... while these queue
        await asyncio.sleep(0.01)
        model.gate.set()
        return model, [await first, *await asyncio.gather(*rest)]

    model, answers = run(main())
    assert model.batches == [["a"], [0, 1, 2, 3, 4]]
    assert answers == ["answer a", *(f"answer {i}" for i in range(5))]


def test_after_a_full_batch_the_next_waits_for_its_clients_and_is_cut_when_they_are_back():
    """Closed-loop clients: after a batch of 4, the first to come back waits for the other
    three (not for the timer: they are all there well within the 30 s wait)."""

    async def main():
        model = Model()
        batch = batcher(model)
        await asyncio.gather(*(batch(i) for i in range(4)))

        async def client(i: int):
            await asyncio.sleep(0.02 * i)  # the answers come back one by one
            return await batch(10 + i)

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(4)))
        return model, batch, time.monotonic() - started

    model, batch, elapsed = run(main())
    assert model.batches == [[0, 1, 2, 3], [10, 11, 12, 13]]
    assert batch.waits == 1
    assert elapsed < LONG / 3


def test_company_that_does_not_come_is_waited_for_once_then_not_at_all():
    async def main():
        model = Model()
        batch = batcher(model, wait_s=0.05)
        await asyncio.gather(*(batch(i) for i in range(4)))  # then the load drops to one client
        started = time.monotonic()
        await batch("x")  # waits up to 0.05 s for the other three, who never come
        waited = time.monotonic() - started
        for i in range(3):
            await batch(f"y{i}")  # a batch of one is the last batch now: no more waiting
        return model, batch, waited

    model, batch, waited = run(main())
    assert model.batches == [[0, 1, 2, 3], ["x"], ["y0"], ["y1"], ["y2"]]
    assert batch.waits == 1
    assert waited >= 0.045


def test_a_batch_waits_for_requests_whose_inputs_are_still_being_read():
    """Uploads are decoded in worker threads before they queue: a batch that could run
    waits for the requests on their way, and runs once they are queued."""

    async def main():
        model = Model()
        batch = batcher(model)
        decoded = asyncio.Event()

        async def upload():
            with batch.coming():
                await decoded.wait()
            return await batch("upload")

        slow = asyncio.ensure_future(upload())
        await asyncio.sleep(0)
        fast = asyncio.ensure_future(batch("text"))
        await asyncio.sleep(0.05)
        ran_before = list(model.batches)
        decoded.set()
        return model, batch, ran_before, [await fast, await slow]

    model, batch, ran_before, answers = run(main())
    assert ran_before == []  # "text" waited for the upload on its way ...
    assert model.batches == [["text", "upload"]]  # ... and ran with it, well before the 30 s wait
    assert answers == ["answer text", "answer upload"]
    assert batch.waits == 1


def test_a_request_that_fails_on_its_way_is_not_waited_for():
    async def main():
        model = Model()
        batch = batcher(model)

        async def bad_upload():
            with batch.coming():
                await asyncio.sleep(0.02)
                raise ValueError("not audio")

        bad = asyncio.ensure_future(bad_upload())
        await asyncio.sleep(0)
        answer = await batch("text")
        with pytest.raises(ValueError):
            await bad
        return model, answer

    model, answer = run(main())
    assert answer == "answer text"
    assert model.batches == [["text"]]


def test_batches_keep_the_token_budget_and_the_arrival_order():
    costs = {"first": 1, "a": 4, "b": 4, "c": 3, "d": 1, "e": 10, "f": 2}

    async def main():
        model = Model()
        model.gate = asyncio.Event()
        batch = batcher(model, budget=10, wait_s=0, cost=costs.__getitem__)
        first = asyncio.ensure_future(batch("first"))
        await model.started.wait()
        rest = [asyncio.ensure_future(batch(name)) for name in costs if name != "first"]
        await asyncio.sleep(0.01)
        model.gate.set()
        return model, [await first, *await asyncio.gather(*rest)]

    model, answers = run(main())
    assert answers == [f"answer {name}" for name in costs]
    # c does not fit after a + b (11 > 10), and d, which would, does not overtake it
    assert model.batches == [["first"], ["a", "b"], ["c", "d"], ["e"], ["f"]]
    assert all(sum(costs[item] for item in b) <= 10 for b in model.batches)


def test_an_item_larger_than_a_whole_batch_fails_at_once():
    async def main():
        model = Model()
        batch = batcher(model, budget=10, cost=len)
        with pytest.raises(RuntimeError, match="larger than a whole batch"):
            await batch("x" * 11)
        return model, await batch("x" * 10)

    model, answer = run(main())
    assert answer == "answer " + "x" * 10
    assert model.batches == [["x" * 10]]


def test_an_error_reaches_every_caller_of_its_batch_and_no_other():
    async def main():
        model = Model(fail_on=2)
        batch = batcher(model, wait_s=0.01)  # the next request waits for the batch's other clients: not long
        together = await asyncio.gather(*(batch(i) for i in range(4)), return_exceptions=True)
        return together, await batch(5)

    together, after = run(main())
    assert all(isinstance(e, ValueError) and "bad item 2" in str(e) for e in together)
    assert after == "answer 5"


def test_a_wrong_number_of_answers_is_an_error():
    async def main():
        async def short(items):
            return items[:-1]

        batch = AdaptiveBatcher(short, budget=10, wait_s=0, cost=lambda item: 1)
        return await asyncio.gather(*(batch(i) for i in range(3)), return_exceptions=True)

    for result in run(main()):
        assert isinstance(result, RuntimeError) and "2 answers for 3 items" in str(result)


def test_a_caller_that_went_away_is_dropped_before_its_batch_runs():
    async def main():
        model = Model()
        model.gate = asyncio.Event()
        batch = batcher(model, wait_s=0)
        first = asyncio.ensure_future(batch("a"))
        await model.started.wait()
        gone = asyncio.ensure_future(batch("gone"))
        kept = asyncio.ensure_future(batch("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        model.gate.set()
        return model, await first, await kept

    model, first, kept = run(main())
    assert (first, kept) == ("answer a", "answer kept")
    assert model.batches == [["a"], ["kept"]]


def test_after_a_pause_the_last_batch_s_clients_are_not_waited_for():
    async def main():
        model = Model()
        batch = batcher(model, wait_s=0.05)
        await asyncio.gather(*(batch(i) for i in range(4)))
        await asyncio.sleep(0.1)  # longer than the wait: whoever was coming back is back
        return batch, await batch("later")

    batch, answer = run(main())
    assert answer == "answer later"
    assert batch.waits == 0


def test_a_batch_cut_by_the_budget_leaves_a_backlog_that_runs_without_waiting():
    async def main():
        model = Model()
        batch = batcher(model, budget=3)
        answers = await asyncio.gather(*(batch(i) for i in range(7)))
        return model, batch, answers

    model, batch, answers = run(main())
    assert model.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert answers == [f"answer {i}" for i in range(7)]
    assert batch.waits == 0


def test_limits_reject_a_negative_wait():
    with pytest.raises(ValueError, match="wait_s"):
        AdaptiveBatcher(Model(), budget=1, wait_s=-1, cost=lambda item: 1)


# ------------------------------------------------------------------ through a model server


def test_a_model_server_answers_a_lone_request_without_the_wait(tiny_checkpoint, one_thread):
    """A real model server with a 30 s batch wait: a lone request is answered at once,
    concurrent ones share a forward pass within the budget, with the answers a batch of
    one gives."""
    from serving.catalog import read_cards
    from serving.deployments import ModelServer
    from serving.limits import ServeLimits

    [card] = read_cards([str(tiny_checkpoint)])
    limits = ServeLimits(max_batch_tokens=64, batch_wait_timeout_s=LONG)
    texts = ["a warm and funny film", "dull", "not bad at all", "i did not like it"] * 4

    async def main():
        server = ModelServer.func_or_class(card, limits, True)
        alone = [(await server.answer([text]))[0] for text in texts[:4]]
        together = await asyncio.gather(*(server.answer([text]) for text in texts))
        return server, alone, [answer for [answer] in together]

    server, alone, together = run(main(), timeout=LONG / 2)
    stats = server.batch_stats()
    assert stats["largest_batch_requests"] > 1, stats  # the concurrent ones shared batches ...
    assert stats["largest_batch_tokens"] <= 64, stats  # ... within the budget
    assert stats["waited_batches"] == 0, stats  # and nobody waited for company
    for got, want in zip(together, alone * 4):
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
