"""Model deployments: one replica holds one checkpoint and answers with plain Python
objects. HTTP (validation, status codes, JSON errors) lives in the ingress, ``app.py``.

A request's texts are tokenized as soon as it arrives, then its token id lists go
through ``@serve.batch``, whose batch size is a *token count*
(``batch_size_fn=total_tokens``): many short requests share one forward pass, and
one batch never holds more than ``max_batch_tokens`` tokens however the traffic
looks. A request with more tokens than that is split into consecutive chunks that
queue like separate requests, so Serve never sees an item larger than a batch::

    request -> encode -> [ids, ids, ...] -> token_chunks -> score (batched) -> predictions
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import torch
from ray import serve

from pipelines.inference import TextClassifier, predictions
from serving.limits import ServeLimits

_DEFAULT_LIMITS = ServeLimits()


def total_tokens(requests: list[list[list[int]]]) -> int:
    """``batch_size_fn``: the tokens in a batch of requests (each a list of id lists)."""
    return sum(len(ids) for request in requests for ids in request)


def token_chunks(ids: list[list[int]], budget: int) -> list[list[list[int]]]:
    """Split ``ids`` into consecutive runs of at most ``budget`` tokens (a single list
    longer than ``budget`` gets a run of its own)."""
    chunks: list[list[list[int]]] = []
    current: list[list[int]] = []
    size = 0
    for row in ids:
        if current and size + len(row) > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(row)
        size += len(row)
    if current:
        chunks.append(current)
    return chunks


class _TokenBatchWarningFilter(logging.Filter):
    """Serve warns when ``max_batch_size`` exceeds ``max_ongoing_requests``; that check
    assumes one item per request. Here the batch size counts tokens, so the warning
    would fire on every replica and mean nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("max_batch_size" in message and "max_ongoing_requests" in message)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class TextClassifierDeployment:
    """Serves one seq2vec checkpoint: ``classify(texts) -> [prediction, ...]``.

    ``@serve.batch`` keeps its settings on the decorated function, i.e. per process;
    that is per replica here, since a replica is its own actor process.
    """

    def __init__(self, checkpoint: str, limits: ServeLimits) -> None:
        torch.set_num_threads(1)  # replicas share the node's cores; batching gives the throughput
        logging.getLogger("ray.serve").addFilter(_TokenBatchWarningFilter())
        self.classifier = TextClassifier(checkpoint, max_tokens=limits.max_batch_tokens)
        self.max_batch_tokens = limits.max_batch_tokens
        self.score.set_max_batch_size(limits.max_batch_tokens)
        self.score.set_batch_wait_timeout_s(limits.batch_wait_timeout_s)
        self._stats = {"batches": 0, "requests": 0, "largest_batch_requests": 0, "largest_batch_tokens": 0}

    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """One prediction per text, in order."""
        ids = self.classifier.encode(texts)
        chunks = token_chunks(ids, self.max_batch_tokens)
        probs = await asyncio.gather(*(self.score(chunk) for chunk in chunks))
        return predictions(np.concatenate(probs), self.classifier.labels)

    @serve.batch(
        max_batch_size=_DEFAULT_LIMITS.max_batch_tokens,
        batch_wait_timeout_s=_DEFAULT_LIMITS.batch_wait_timeout_s,
        batch_size_fn=total_tokens,
    )
    async def score(self, requests: list[list[list[int]]]) -> list[np.ndarray]:
        """Probabilities ``(len(request), labels)`` for each queued request, from one
        pass over all their rows. The forward pass runs in a worker thread so the event
        loop keeps taking requests, which queue up for the next batch."""
        rows = [ids for request in requests for ids in request]
        probs = await asyncio.to_thread(self.classifier.probabilities, rows)
        self._record(len(requests), total_tokens(requests))
        return np.split(probs, np.cumsum([len(request) for request in requests])[:-1])

    def batch_stats(self) -> dict[str, int]:
        """How well batching works on this replica: batches run, requests (or chunks)
        they held, and the largest batch seen, in requests and in tokens."""
        return dict(self._stats)

    def _record(self, requests: int, tokens: int) -> None:
        stats = self._stats
        stats["batches"] += 1
        stats["requests"] += requests
        stats["largest_batch_requests"] = max(stats["largest_batch_requests"], requests)
        stats["largest_batch_tokens"] = max(stats["largest_batch_tokens"], tokens)


DEPLOYMENTS = {"classify": TextClassifierDeployment}
"""The deployment class serving each task (``meta.json``'s ``task``)."""
