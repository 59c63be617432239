"""The model server: one instance holds one checkpoint and answers with plain Python
objects, whatever its application. It runs inside each ingress replica
(``serving.app.LocalModel``, the default) or as a Serve deployment of its own
(``separate_models``); HTTP (validation, status codes, JSON errors) lives in the
ingress, ``app.py``. Everything application-specific comes from the checkpoint's
application (``pipelines.apps``): its predictor (``rows``/``run``/``stream``) and its
``ServeSpec`` (route, streaming, row units per token).

A request's inputs become model rows as soon as it arrives (texts -> token ids;
uploaded recordings -> log-mel frames, ``serving.audio``; uploaded video files -> RGB
frames, ``serving.video``; uploaded images -> one RGB frame, ``serving.image``), then
they go through the model's batcher (``serving.batcher.AdaptiveBatcher``), whose batch
size is a *row-unit count* (:func:`item_cost`): many short requests share one forward
pass, one batch never holds more than ``max_batch_tokens`` tokens however the traffic
looks, and a request that finds nobody to batch with runs at once. A request with more
than that is split into consecutive chunks that queue like separate requests, so the
batcher never sees an item larger than a batch::

    answer:  inputs -> rows -> chunks (budget / beam) -> items (rows, options) -> batched
             -> one predictor.run pass per option group -> answers, in input order

    rows:    text:  texts   -> predictor.rows      -> [token ids, ...]          (a row's length: tokens)
             audio: uploads -> UploadFeaturizer    -> [(T, n_mels) frames, ...]  (length: frames,
                    (in a worker thread)              SUBSAMPLING = 4 per token of the budget)
             video: uploads -> UploadClips         -> [(T, S, S, 3) uint8 frames, ...] (length:
                    (in a worker thread)              frames, one per token of the budget)
             image: uploads -> UploadImages        -> [(1, S, S, 3) uint8 frame, ...] (length: 1,
                    (in a worker thread)              one image per token of the budget)

An item of a decoding route counts ``beam_size x`` its source rows: every beam row holds
a copy of its sentence's encoder memory, which each decoder step attends over, so that
is what a batch's memory and per-step work grow with. Requests in one batch may ask for
different beam sizes and lengths; each group of equal options runs together.

What a deployment can take is checked on the driver (:func:`check_limits`), before
deployment: its largest possible item must fit one batch, since the batcher fails an
item larger than the budget instead of running it alone.

How many replicas serve each model is a Serve option, not code: :func:`with_options`
applies a Serve config's ``deployment_options`` (autoscaling, replicas, actor
resources) to every model deployment, checked here so a typo fails the build with
its name instead of being ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError
from ray import serve
from ray.serve import Deployment
from ray.serve.config import AutoscalingConfig

from pipelines.checkpoint import load_inference
from pipelines.devices import check_available
from pipelines.errors import ConfigError, DataError
from serving import audio as audio_uploads
from serving import image as image_uploads
from serving import video as video_uploads
from serving.batcher import AdaptiveBatcher
from serving.limits import ServeLimits
from serving.uploads import Upload

if TYPE_CHECKING:
    from serving.catalog import ModelCard


def total_tokens(requests: list[list]) -> int:
    """The row units in a batch of requests (each a list of rows: token id lists, or
    frame arrays, whose ``len`` is what the budget counts)."""
    return sum(len(ids) for request in requests for ids in request)


def token_chunks(ids: list[list[int]], budget: int) -> list[list[list[int]]]:
    """Split ``ids`` (rows: token id lists or frame arrays) into consecutive runs of at
    most ``budget`` tokens (a single row longer than ``budget`` gets a run of its own)."""
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
class BatchItem:
    """One queued piece of a request: rows sharing the options they run with."""

    rows: list
    """Token id lists, ``(T, n_mels)`` frames of recordings or ``(T, S, S, 3)`` frames of clips."""
    options: tuple[tuple[str, Any], ...] = ()
    """Keyword options of ``predictor.run`` (``beam_size``, ``max_length``), sorted."""

    @property
    def rows_per_source(self) -> int:
        """Copies of each row a pass holds: the beam (a decoder keeps one per beam)."""
        return int(dict(self.options).get("beam_size") or 1)  # None: a recipe default filled in later, or none


def item_cost(items: list[BatchItem]) -> int:
    """A batch's size for the token budget: row units times beam, summed over items."""
    return sum(item.rows_per_source * len(row) for item in items for row in item.rows)


def run_grouped(predictor, items: list[BatchItem]) -> list[list[dict[str, Any]]]:
    """Answers for every row of every item (``[item][row]``), from one
    ``predictor.run`` pass per option group: a batch may mix options, and a pass needs
    one. Inside a pass rows run sorted by length."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.options, []).append(i)
    out: list[list[dict[str, Any]]] = [[] for _ in items]
    for options, members in groups.items():
        found = predictor.run([row for i in members for row in items[i].rows], **dict(options))
        start = 0
        for i in members:
            out[i] = found[start : start + len(items[i].rows)]
            start += len(items[i].rows)
    return out


class BatchStats:
    """How well batching works on one replica: batches run, requests (or chunks) they
    held, the largest batch seen, in requests, in tokens and in option groups, and how
    many batches waited for company (``waited_batches``, from the batcher)."""

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


class _Medium:
    """How a server of one medium reads a request's inputs into rows, and the longest
    row one input can make (for :func:`check_limits`' messages)."""

    unit = "tokens"

    def reader(self, predictor, limits: ServeLimits) -> Callable[[list], list]:
        return predictor.rows

    def largest_input(self, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        return card.max_length, "data.max_length"


class _Audio(_Medium):
    """Uploads read with the checkpoint's own featurizer, under its duration limit."""

    unit = "frames"

    def reader(self, predictor, limits: ServeLimits) -> Callable[[list[Upload]], list]:
        featurizer = predictor.featurizer
        return audio_uploads.UploadFeaturizer(featurizer, audio_uploads.DurationLimit.of(featurizer.config, limits))

    def largest_input(self, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        assert card.audio is not None, "audio cards carry the recipe's data.audio"
        limit = audio_uploads.DurationLimit.of(card.audio, limits)
        return audio_uploads.most_frames(card.audio, limit.seconds), f"{limit.seconds:g} s, {limit.setting}"


class _Video(_Medium):
    """Uploads read with the checkpoint's own featurizer; a frame is one step of the
    recurrent stack, so one token."""

    unit = "frames"

    def reader(self, predictor, limits: ServeLimits) -> Callable[[list[Upload]], list]:
        featurizer = predictor.featurizer
        return video_uploads.UploadClips(featurizer, video_uploads.DurationLimit.of(featurizer.config, limits))

    def largest_input(self, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        assert card.video is not None, "video cards carry the recipe's data.video"
        return card.video.max_frames, "data.video.max_frames"


class _Image(_Medium):
    """Uploads read with the checkpoint's own image reader; an image is one frame, so
    one token of the budget."""

    unit = "images"

    def reader(self, predictor, limits: ServeLimits) -> Callable[[list[Upload]], list]:
        return image_uploads.UploadImages(predictor.reader)

    def largest_input(self, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        return 1, "one image"


class _Chords(_Medium):
    """Music: a compose request's primer (a list of chords), one row unit whatever its
    length (``pipelines.apps.music.predictor.Primer``): a batch holds up to
    ``max_batch_tokens`` compose requests."""

    unit = "primers"

    def largest_input(self, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        return 1, "one primer"


MEDIA = {"text": _Medium(), "audio": _Audio(), "video": _Video(), "image": _Image(), "music": _Chords()}
"""What serving does per medium (``App.medium``): the one place a new medium plugs in."""


def batch_budget(card: ModelCard, limits: ServeLimits) -> int:
    """Row units one batch may hold."""
    return limits.max_batch_tokens * card.app.serve.per_token


def _describe_budget(card: ModelCard, limits: ServeLimits) -> str:
    per_token = card.app.serve.per_token
    if per_token == 1:
        return f"max_batch_tokens {limits.max_batch_tokens}"
    return (f"{batch_budget(card, limits)} {MEDIA[card.input].unit} (max_batch_tokens {limits.max_batch_tokens} "
            f"x {per_token})")


def check_limits(card: ModelCard, limits: ServeLimits) -> None:
    """One input (its longest row, at the largest beam on a decoding route) must fit one
    batch, and a decoder's default beam size and output length must be requests the
    limits allow. :class:`ConfigError` names the setting."""
    medium = MEDIA[card.input]
    size, why = medium.largest_input(card, limits)
    budget = batch_budget(card, limits)
    if not card.app.serve.route.decoding:
        if size > budget:
            raise ConfigError(f"{card.checkpoint}: one input may have {size} {medium.unit} ({why}), "
                              f"more than a whole batch: {_describe_budget(card, limits)}")
        return
    assert card.decode is not None, "decoding cards carry the recipe's decode settings"
    if size * limits.max_beam_size > budget:
        raise ConfigError(
            f"{card.checkpoint}: one input may have {size} {medium.unit} ({why}), which at max_beam_size "
            f"{limits.max_beam_size} makes {size * limits.max_beam_size} decoder-row {medium.unit}, more than "
            f"a whole batch: {_describe_budget(card, limits)}"
        )
    for key, default, limit in (("beam_size", card.decode.beam_size, "max_beam_size"),
                                ("max_length", card.decode.max_length, "max_generate_length")):
        if default > getattr(limits, limit):
            raise ConfigError(
                f"{card.checkpoint}: the recipe's decode.{key} {default} (a request's default) is above "
                f"the serve limit {limit} {getattr(limits, limit)}"
            )


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class ModelServer:
    """Serves one checkpoint of any application: ``answer(inputs, **options)`` -> one
    JSON-able answer per input, in order (``{"label", "score", "scores"}`` on classify,
    ``{"text", "score"}`` on generate: the best hypothesis, ``score`` GNMT's
    length-normalised log-probability); ``stream(inputs, ...)`` on streaming routes.

    One torch thread (replicas share the node's cores; batching gives the throughput).
    The batcher (``serving.batcher.AdaptiveBatcher``, in place of ``@serve.batch``, whose
    timer made a lone request wait ``batch_wait_timeout_s``) is made per instance: two
    models served from one ingress replica must not share a queue. Without ``batching``
    each item runs alone (as a server without batching would: the serving benchmark's
    comparison).

    A decoding request's ``beam_size`` / ``max_length`` left as None take the recipe's
    ``decode`` values; ``alpha`` and ``max_length_ratio`` always come from there.

    ``device`` is ``cpu`` or ``cuda``: the GPU this replica reserved (``serving.placement``);
    a replica placed without one fails to start, naming the setting, instead of
    serving from the CPU unnoticed.
    """

    def __init__(self, card: ModelCard, limits: ServeLimits, batching: bool = True, device: str = "cpu") -> None:
        torch.set_num_threads(1)
        self.card, self.spec = card, card.app.serve
        self.budget = batch_budget(card, limits)
        self._stats = BatchStats()
        self._batcher = AdaptiveBatcher(self._run, budget=self.budget, wait_s=limits.batch_wait_timeout_s,
                                        cost=lambda item: item_cost([item])) if batching else None
        loaded = load_inference(card.checkpoint, device=check_available(device, flag="device"))
        self.model = card.app.predictor(loaded, budget=self.budget)
        self._read = MEDIA[card.input].reader(self.model, limits)

    async def _rows(self, inputs: list) -> list:
        if self.card.input == "text":
            return self._read(inputs)
        return await asyncio.to_thread(self._read, inputs)  # decoding uploads: the loop keeps taking requests

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A decoding request's options with the recipe's defaults filled in."""
        if not self.spec.route.decoding:
            return options
        defaults = self.model.recipe.decode
        filled = {**options}
        for key in ("beam_size", "max_length"):
            if filled.get(key) is None:
                filled[key] = getattr(defaults, key)
        return filled

    async def answer(self, inputs: list, **options: Any) -> list[dict[str, Any]]:
        """One answer per input, in order."""
        options = self._options(options)
        item_options = tuple(sorted(options.items()))
        with self._batcher.coming() if self._batcher else contextlib.nullcontext():  # uploads: read in a thread
            rows = await self._rows(inputs)
        chunks = token_chunks(rows, self.budget // int(options.get("beam_size") or 1))
        found = await asyncio.gather(*(self._batched(BatchItem(chunk, item_options)) for chunk in chunks))
        return [answer for part in found for answer in part]

    async def _batched(self, item: BatchItem) -> list[dict[str, Any]]:
        """``item``'s answers: from a batch, or from a pass of its own without batching."""
        if self._batcher is not None:
            return await self._batcher(item)
        return (await self._run([item]))[0]

    async def stream(self, inputs: list, *, max_length: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Greedy decoding of ``inputs`` as it goes (``pipelines.inference.streaming``
        items: each token with the text it adds, then a final item per input). One stream
        decodes its own inputs, outside the batches: its client waits on every step. Steps
        run in a worker thread, one at a time, so the event loop keeps serving meanwhile."""
        if not self.spec.streaming:
            raise DataError(f"stream: {self.spec.no_stream or 'this model cannot stream'}; "
                            "send the request without 'stream'")
        rows = await self._rows(inputs)  # a bad upload fails here, before the first item
        items = self.model.stream(rows, max_length=max_length)  # None: the recipe's decode.max_length
        done = object()
        while (item := await asyncio.to_thread(next, items, done)) is not done:
            yield item

    async def _run(self, items: list[BatchItem]) -> list[list[dict[str, Any]]]:
        """Answers for each queued item's rows, run in a worker thread (the event loop
        keeps taking requests, which queue up for the next batch)."""
        found = await asyncio.to_thread(run_grouped, self.model, items)
        self._stats.record(len(items), item_cost(items), len({item.options for item in items}))
        return found

    async def ready(self) -> bool:
        """A no-op for ``/healthz``: answering at all means the model is loaded."""
        return True

    def batch_stats(self) -> dict[str, int]:
        """See :class:`BatchStats` (its tokens are this replica's row units)."""
        return {**self._stats.stats, "waited_batches": self._batcher.waits if self._batcher else 0}


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
