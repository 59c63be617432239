"""Model deployments: one replica holds one checkpoint and answers with plain Python
objects. HTTP (validation, status codes, JSON errors) lives in the ingress, ``app.py``.

A request's texts are tokenized as soon as it arrives, then its token id lists go
through ``@serve.batch``, whose batch size is a *token count* (``batch_size_fn``):
many short requests share one forward pass, and one batch never holds more than
``max_batch_tokens`` tokens however the traffic looks. A request with more tokens than
that is split into consecutive chunks that queue like separate requests, so Serve never
sees an item larger than a batch::

    classify:  texts -> encode -> [ids, ...] -> token_chunks -> score (batched) -> predictions
    generate:  texts -> encode -> [ids, ...] -> token_chunks -> decode (batched) -> outputs
                                                  (budget / beam_size)    |
                          one Translator.generate_ids pass per (beam_size, max_length) group

A generate item counts ``beam_size x`` its source tokens: every beam row holds a copy
of its sentence's encoder memory, which each decoder step attends over, so that is
what a batch's memory and per-step work grow with. Requests in one batch may ask for
different beam sizes and lengths; each group of equal options is decoded together.

What a deployment can take is checked on the driver (``check_limits``), before
deployment: its largest possible item must fit one batch, since Serve fails an item
larger than ``max_batch_size`` instead of running it alone.

How many replicas serve each model is a Serve option, not code: :func:`with_options`
applies a Serve config's ``deployment_options`` (autoscaling, replicas, actor
resources) to every model deployment, checked here so a typo fails the build with
its name instead of being ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError
from ray import serve
from ray.serve import Deployment
from ray.serve.config import AutoscalingConfig

from models.decoding import Hypothesis
from pipelines.errors import ConfigError
from pipelines.inference import TextClassifier, predictions
from pipelines.translation import Translator
from serving.limits import ServeLimits

if TYPE_CHECKING:
    from serving.catalog import ModelCard

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


@dataclass(frozen=True)
class DecodeItem:
    """One queued piece of a generate request: source id lists sharing decoding options."""

    ids: list[list[int]]
    beam_size: int
    max_length: int
    """Most output tokens per source."""


def decoder_tokens(items: list[DecodeItem]) -> int:
    """``batch_size_fn`` of generate: ``beam_size x`` source tokens, summed over items."""
    return sum(item.beam_size * len(ids) for item in items for ids in item.ids)


def decode_grouped(translator: Translator, items: list[DecodeItem]) -> list[list[list[Hypothesis]]]:
    """Hypotheses for every source of every item (``[item][source] -> n-best list``),
    from one ``generate_ids`` pass per ``(beam_size, max_length)`` group: a batch may mix
    options, and a pass needs one. Inside a pass sources run sorted by length."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault((item.beam_size, item.max_length), []).append(i)
    out: list[list[list[Hypothesis]]] = [[] for _ in items]
    for (beam_size, max_length), members in groups.items():
        rows = [ids for i in members for ids in items[i].ids]
        found = translator.generate_ids(rows, beam_size=beam_size, max_length=max_length)
        start = 0
        for i in members:
            out[i] = found[start : start + len(items[i].ids)]
            start += len(items[i].ids)
    return out


class BatchStats:
    """How well batching works on one replica: batches run, requests (or chunks) they
    held, and the largest batch seen, in requests, in tokens and in option groups."""

    def __init__(self) -> None:
        self.stats = {"batches": 0, "requests": 0, "largest_batch_requests": 0, "largest_batch_tokens": 0,
                      "largest_batch_groups": 0}

    def record(self, requests: int, tokens: int, groups: int = 1) -> None:
        stats = self.stats
        stats["batches"] += 1
        stats["requests"] += requests
        stats["largest_batch_requests"] = max(stats["largest_batch_requests"], requests)
        stats["largest_batch_tokens"] = max(stats["largest_batch_tokens"], tokens)
        stats["largest_batch_groups"] = max(stats["largest_batch_groups"], groups)


class _TokenBatchWarningFilter(logging.Filter):
    """Serve warns when ``max_batch_size`` exceeds ``max_ongoing_requests``; that check
    assumes one item per request. Here the batch size counts tokens, so the warning
    would fire on every replica and mean nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("max_batch_size" in message and "max_ongoing_requests" in message)


def _start_replica(batched, limits: ServeLimits) -> None:
    """What every model replica sets up first: one torch thread (replicas share the node's
    cores; batching gives the throughput), the token-count warning filter, and its
    ``@serve.batch`` method sized by the limits."""
    torch.set_num_threads(1)
    logging.getLogger("ray.serve").addFilter(_TokenBatchWarningFilter())
    batched.set_max_batch_size(limits.max_batch_tokens)
    batched.set_batch_wait_timeout_s(limits.batch_wait_timeout_s)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class TextClassifierDeployment:
    """Serves one seq2vec checkpoint: ``classify(texts) -> [prediction, ...]``.

    ``@serve.batch`` keeps its settings on the decorated function, i.e. per process;
    that is per replica here, since a replica is its own actor process.
    """

    def __init__(self, checkpoint: str, limits: ServeLimits) -> None:
        _start_replica(self.score, limits)
        self.classifier = TextClassifier(checkpoint, max_tokens=limits.max_batch_tokens)
        self.max_batch_tokens = limits.max_batch_tokens
        self._stats = BatchStats()

    @staticmethod
    def check_limits(card: ModelCard, limits: ServeLimits) -> None:
        """One input (at most ``data.max_length`` tokens) must fit one batch."""
        if card.max_length > limits.max_batch_tokens:
            raise ConfigError(
                f"{card.checkpoint}: one input may have {card.max_length} tokens (data.max_length), "
                f"more than a whole batch: max_batch_tokens {limits.max_batch_tokens}"
            )

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
        self._stats.record(len(requests), total_tokens(requests))
        return np.split(probs, np.cumsum([len(request) for request in requests])[:-1])

    def batch_stats(self) -> dict[str, int]:
        """See :class:`BatchStats`."""
        return dict(self._stats.stats)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class TranslatorDeployment:
    """Serves one seq2seq checkpoint:
    ``generate(texts, beam_size=, max_length=) -> [{"text", "score"}, ...]``.

    A request's ``beam_size`` / ``max_length`` left as None take the recipe's ``decode``
    values; ``alpha`` and ``max_length_ratio`` always come from there. ``@serve.batch``
    settings are per replica, as for :class:`TextClassifierDeployment`.
    """

    def __init__(self, checkpoint: str, limits: ServeLimits) -> None:
        _start_replica(self.decode, limits)
        self.translator = Translator(checkpoint, max_tokens=limits.max_batch_tokens)
        self.max_batch_tokens = limits.max_batch_tokens
        self._stats = BatchStats()

    @staticmethod
    def check_limits(card: ModelCard, limits: ServeLimits) -> None:
        """One input at the largest beam must fit one batch, and the recipe's default
        beam size and output length must be requests the limits allow."""
        assert card.decode is not None, "generate cards carry the recipe's decode settings"
        if card.max_length * limits.max_beam_size > limits.max_batch_tokens:
            raise ConfigError(
                f"{card.checkpoint}: one input may have {card.max_length} tokens (data.max_length), which at "
                f"max_beam_size {limits.max_beam_size} makes {card.max_length * limits.max_beam_size} decoder-row "
                f"tokens, more than a whole batch: max_batch_tokens {limits.max_batch_tokens}"
            )
        for key, default, limit in (("beam_size", card.decode.beam_size, "max_beam_size"),
                                    ("max_length", card.decode.max_length, "max_generate_length")):
            if default > getattr(limits, limit):
                raise ConfigError(
                    f"{card.checkpoint}: the recipe's decode.{key} {default} (a request's default) is above "
                    f"the serve limit {limit} {getattr(limits, limit)}"
                )

    async def generate(self, texts: list[str], *, beam_size: int | None = None,
                       max_length: int | None = None) -> list[dict[str, Any]]:
        """One ``{"text", "score"}`` per text, in order (best hypothesis; ``score`` is
        GNMT's length-normalised log-probability)."""
        defaults = self.translator.defaults
        beam_size = defaults.beam_size if beam_size is None else beam_size
        max_length = defaults.max_length if max_length is None else max_length
        ids = self.translator.encode(texts)
        chunks = token_chunks(ids, self.max_batch_tokens // beam_size)
        found = await asyncio.gather(*(self.decode(DecodeItem(chunk, beam_size, max_length)) for chunk in chunks))
        return self.translator.outputs([hypotheses for part in found for hypotheses in part])

    @serve.batch(
        max_batch_size=_DEFAULT_LIMITS.max_batch_tokens,
        batch_wait_timeout_s=_DEFAULT_LIMITS.batch_wait_timeout_s,
        batch_size_fn=decoder_tokens,
    )
    async def decode(self, items: list[DecodeItem]) -> list[list[list[Hypothesis]]]:
        """Hypotheses for each queued item's sources, decoded in a worker thread (the
        event loop keeps taking requests, which queue up for the next batch)."""
        found = await asyncio.to_thread(decode_grouped, self.translator, items)
        groups = len({(item.beam_size, item.max_length) for item in items})
        self._stats.record(len(items), decoder_tokens(items), groups)
        return found

    def batch_stats(self) -> dict[str, int]:
        """See :class:`BatchStats`."""
        return dict(self._stats.stats)


DEPLOYMENTS = {"classify": TextClassifierDeployment, "generate": TranslatorDeployment}
"""The deployment serving each task (``meta.json``'s ``task``); each class has a
``check_limits(card, limits)`` the driver runs before deploying it."""


DEPLOYMENT_OPTIONS = ("num_replicas", "autoscaling_config", "max_ongoing_requests", "max_queued_requests",
                      "ray_actor_options")
"""The Serve options ``deployment_options`` may set for every model deployment: how many
replicas, how they scale, what each may hold. Other Serve options go per deployment, by
name, in a Serve config's ``deployments:`` list."""


def with_options(deployment: Deployment, *, name: str, options: Mapping[str, Any]) -> Deployment:
    """``deployment`` named ``name``, with the Serve ``options`` (keys of
    :data:`DEPLOYMENT_OPTIONS`) over its defaults; a given ``ray_actor_options`` replaces
    the default ``{"num_cpus": 0.5}`` whole, as Serve does. :class:`ConfigError` names
    an unknown key or a value Serve rejects."""
    check_option_names(options)
    try:
        return deployment.options(name=name, **options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"deployment_options: {problems}") from exc
    except (TypeError, ValueError) as exc:  # Serve's own checks, e.g. num_replicas with autoscaling
        raise ConfigError(f"deployment_options: {exc}") from exc


def check_option_names(options: Mapping[str, Any]) -> None:
    """Unknown keys are errors: Serve would ignore a misspelt autoscaling key and keep
    its default, so ``max_replica: 8`` would silently serve from one replica."""
    unknown = sorted(set(options) - set(DEPLOYMENT_OPTIONS))
    if unknown:
        raise ConfigError(f"deployment_options: unknown key(s) {unknown}; known: {list(DEPLOYMENT_OPTIONS)} "
                          "(set other Serve options per deployment under the config's 'deployments:')")
    autoscaling = options.get("autoscaling_config")
    if isinstance(autoscaling, Mapping):
        unknown = sorted(set(autoscaling) - set(AutoscalingConfig.model_fields))
        if unknown:
            raise ConfigError(f"deployment_options.autoscaling_config: unknown key(s) {unknown}; "
                              f"known: {sorted(AutoscalingConfig.model_fields)}")
