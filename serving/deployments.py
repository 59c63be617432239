"""Model servers: one instance holds one checkpoint and answers with plain Python
objects. It runs inside each ingress replica (``serving.app.LocalModel``, the default)
or as a Serve deployment of its own (``separate_models``); HTTP (validation, status
codes, JSON errors) lives in the ingress, ``app.py``.

A request's inputs become model rows as soon as it arrives (texts -> token ids;
uploaded recordings -> log-mel frames, ``serving.audio``; uploaded video files -> RGB
frames, ``serving.video``), then they go through
``@serve.batch``, whose batch size is a *token count* (``batch_size_fn``): many short
requests share one forward pass, and one batch never holds more than
``max_batch_tokens`` tokens however the traffic looks. A request with more tokens than
that is split into consecutive chunks that queue like separate requests, so Serve never
sees an item larger than a batch::

    classify:  inputs -> rows -> token_chunks -> score (batched)  -> predictions
    generate:  inputs -> rows -> token_chunks -> decode (batched) -> outputs
                                 (budget / beam_size)    |
               one generate_ids pass per (beam_size, max_length) group

    rows:      text:  texts   -> encode             -> [token ids, ...]        (a row's length: tokens)
               audio: uploads -> UploadFeaturizer   -> [(T, n_mels) frames, ...] (length: frames,
                      (in a worker thread)              SUBSAMPLING = 4 per token of the budget)
               video: uploads -> UploadClips        -> [(T, S, S, 3) uint8 frames, ...] (length:
                      (in a worker thread)              frames, one per token of the budget)

One class per task (:class:`Classifier`, :class:`Generator`) does the batching, one per
input (:class:`TextInputs`, :class:`AudioInputs`, :class:`VideoInputs`) makes the rows;
each deployment combines one of each and loads its checkpoint.

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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError
from ray import serve
from ray.serve import Deployment
from ray.serve.config import AutoscalingConfig

from models.decoding import Hypothesis
from models.frontend import SUBSAMPLING
from pipelines.audio import AudioFeaturizer
from pipelines.audio_inference import AudioClassifier, SpeechRecognizer
from pipelines.errors import ConfigError, DataError
from pipelines.inference import TextClassifier, predictions
from pipelines.translation import Translator
from pipelines.video import VideoFeaturizer
from pipelines.video_inference import VideoCaptioner, VideoClassifier
from serving import audio as audio_uploads
from serving import video as video_uploads
from serving.limits import ServeLimits
from serving.uploads import Upload

if TYPE_CHECKING:
    from serving.catalog import ModelCard


def total_tokens(requests: list[list[list[int]]]) -> int:
    """``batch_size_fn``: the tokens in a batch of requests (each a list of rows: token id
    lists, or frame arrays, whose ``len`` is what the budget counts)."""
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
class DecodeItem:
    """One queued piece of a generate request: source rows sharing decoding options."""

    ids: list[list[int]]
    """Source rows: token id lists, ``(T, n_mels)`` frames of recordings or
    ``(T, S, S, 3)`` frames of video clips."""
    beam_size: int
    max_length: int
    """Most output tokens per source."""


def decoder_tokens(items: list[DecodeItem]) -> int:
    """``batch_size_fn`` of generate: ``beam_size x`` source tokens, summed over items."""
    return sum(item.beam_size * len(ids) for item in items for ids in item.ids)


def decode_grouped(translator: Translator, items: list[DecodeItem]) -> list[list[list[Hypothesis]]]:
    """Hypotheses for every source of every item (``[item][source] -> n-best list``),
    from one ``translator.generate_ids`` pass per ``(beam_size, max_length)`` group: a
    batch may mix options, and a pass needs one. Inside a pass sources run sorted by
    length. (A speech recognizer or video captioner comes as a ``_FrameDecoder``.)"""
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


def _quiet_token_batch_warning() -> None:
    """Install :class:`_TokenBatchWarningFilter` once per process (models share ingress replicas)."""
    serve_log = logging.getLogger("ray.serve")
    if not any(isinstance(f, _TokenBatchWarningFilter) for f in serve_log.filters):
        serve_log.addFilter(_TokenBatchWarningFilter())


class _Replica:
    """What every model replica shares: one torch thread (replicas share the node's
    cores; batching gives the throughput), a batch budget in row units, batch stats,
    and its batcher.

    The batcher is made per instance (``serve.batch`` over a bound method) rather than
    by decorating the class: ``@serve.batch`` keeps one queue per decorated function,
    i.e. per class and process, and two models of one class served from the same
    ingress replica must not share a queue.
    """

    unit = "tokens"
    """What a row's length counts."""
    per_token = 1
    """Row units per token of ``max_batch_tokens``."""

    def _start(self, run_batch, batch_size_fn, limits: ServeLimits, batching: bool) -> None:
        """Set up the replica before its model loads. ``run_batch(items) -> results``
        runs queued items together; ``self._batched(item)`` queues one, or, without
        ``batching``, runs it alone (as a server without Serve's batching would: the
        benchmark's comparison)."""
        torch.set_num_threads(1)
        _quiet_token_batch_warning()
        self.budget = self.batch_budget(limits)
        self._stats = BatchStats()
        if batching:
            self._batched = serve.batch(max_batch_size=self.budget, batch_wait_timeout_s=limits.batch_wait_timeout_s,
                                        batch_size_fn=batch_size_fn)(run_batch)
        else:
            async def alone(item):
                return (await run_batch([item]))[0]

            self._batched = alone

    @classmethod
    def batch_budget(cls, limits: ServeLimits) -> int:
        """Row units one batch may hold."""
        return limits.max_batch_tokens * cls.per_token

    @classmethod
    def describe_budget(cls, limits: ServeLimits) -> str:
        if cls.per_token == 1:
            return f"max_batch_tokens {limits.max_batch_tokens}"
        return (f"{cls.batch_budget(limits)} {cls.unit} (max_batch_tokens {limits.max_batch_tokens} "
                f"x {cls.per_token})")

    @classmethod
    def largest_input(cls, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        """The longest row one input can make, and why (for ``check_limits``' messages)."""
        raise NotImplementedError

    async def ready(self) -> bool:
        """A no-op for ``/healthz``: answering at all means the model is loaded."""
        return True

    def batch_stats(self) -> dict[str, int]:
        """See :class:`BatchStats` (its tokens are this replica's row units)."""
        return dict(self._stats.stats)


class TextInputs(_Replica):
    """Inputs are texts; rows are their token ids, cut to ``data.max_length``."""

    @classmethod
    def largest_input(cls, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        return card.max_length, "data.max_length"

    async def _rows(self, texts: list[str]) -> list[list[int]]:
        return self.model.encode(texts)


class UploadInputs(_Replica):
    """Inputs are uploads (``serving.uploads.Upload``), which ``self.uploads`` (the
    medium's reader, set by ``_take_uploads``) decodes into frame rows. Decoding runs in
    a worker thread, so the event loop keeps taking requests meanwhile."""

    unit = "frames"
    uploads: Callable[[list[Upload]], list[np.ndarray]]

    async def _rows(self, uploads: list[Upload]) -> list[np.ndarray]:
        return await asyncio.to_thread(self.uploads, uploads)


class AudioInputs(UploadInputs):
    """Rows are the uploads' ``(T, n_mels)`` log-mel frames (``serving.audio``)."""

    per_token = SUBSAMPLING

    @classmethod
    def largest_input(cls, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        assert card.audio is not None, "audio cards carry the recipe's data.audio"
        limit = audio_uploads.DurationLimit.of(card.audio, limits)
        return audio_uploads.most_frames(card.audio, limit.seconds), f"{limit.seconds:g} s, {limit.setting}"

    def _take_uploads(self, featurizer: AudioFeaturizer, limits: ServeLimits) -> None:
        """Read uploads with the checkpoint's own featurizer, under its duration limit."""
        limit = audio_uploads.DurationLimit.of(featurizer.config, limits)
        self.uploads = audio_uploads.UploadFeaturizer(featurizer, limit)


class VideoInputs(UploadInputs):
    """Rows are the uploads' sampled ``(T, size, size, 3)`` uint8 RGB frames
    (``serving.video``); a frame is one step of the recurrent stack, so one token."""

    @classmethod
    def largest_input(cls, card: ModelCard, limits: ServeLimits) -> tuple[int, str]:
        assert card.video is not None, "video cards carry the recipe's data.video"
        return card.video.max_frames, "data.video.max_frames"

    def _take_uploads(self, featurizer: VideoFeaturizer, limits: ServeLimits) -> None:
        """Read uploads with the checkpoint's own featurizer, under its duration limit."""
        self.uploads = video_uploads.UploadClips(featurizer, video_uploads.DurationLimit.of(featurizer.config, limits))


class Classifier(_Replica):
    """``classify(inputs) -> [{"label", "score", "scores"}, ...]``, one per input, in
    order, from a model with ``probabilities(rows)`` and ``labels``."""

    @classmethod
    def check_limits(cls, card: ModelCard, limits: ServeLimits) -> None:
        """One input (its longest row) must fit one batch."""
        size, why = cls.largest_input(card, limits)
        if size > cls.batch_budget(limits):
            raise ConfigError(f"{card.checkpoint}: one input may have {size} {cls.unit} ({why}), "
                              f"more than a whole batch: {cls.describe_budget(limits)}")

    async def classify(self, inputs: list) -> list[dict[str, Any]]:
        """One prediction per input, in order."""
        chunks = token_chunks(await self._rows(inputs), self.budget)
        probs = await asyncio.gather(*(self._batched(chunk) for chunk in chunks))
        return predictions(np.concatenate(probs), self.model.labels)

    async def score(self, requests: list[list]) -> list[np.ndarray]:
        """Probabilities ``(len(request), labels)`` for each queued request, from one
        pass over all their rows. The forward pass runs in a worker thread so the event
        loop keeps taking requests, which queue up for the next batch."""
        rows = [row for request in requests for row in request]
        probs = await asyncio.to_thread(self.model.probabilities, rows)
        self._stats.record(len(requests), total_tokens(requests))
        return np.split(probs, np.cumsum([len(request) for request in requests])[:-1])


class Generator(_Replica):
    """``generate(inputs, beam_size=, max_length=) -> [{"text", "score"}, ...]``, one per
    input, in order (best hypothesis; ``score`` is GNMT's length-normalised
    log-probability), from a model with ``recipe.decode`` and ``outputs(hypotheses)``
    whose ``generate_ids`` is ``self.decoder``'s.

    A request's ``beam_size`` / ``max_length`` left as None take the recipe's ``decode``
    values; ``alpha`` and ``max_length_ratio`` always come from there.
    """

    @classmethod
    def check_limits(cls, card: ModelCard, limits: ServeLimits) -> None:
        """One input at the largest beam must fit one batch, and the recipe's default
        beam size and output length must be requests the limits allow."""
        assert card.decode is not None, "generate cards carry the recipe's decode settings"
        size, why = cls.largest_input(card, limits)
        if size * limits.max_beam_size > cls.batch_budget(limits):
            raise ConfigError(
                f"{card.checkpoint}: one input may have {size} {cls.unit} ({why}), which at max_beam_size "
                f"{limits.max_beam_size} makes {size * limits.max_beam_size} decoder-row {cls.unit}, more than "
                f"a whole batch: {cls.describe_budget(limits)}"
            )
        for key, default, limit in (("beam_size", card.decode.beam_size, "max_beam_size"),
                                    ("max_length", card.decode.max_length, "max_generate_length")):
            if default > getattr(limits, limit):
                raise ConfigError(
                    f"{card.checkpoint}: the recipe's decode.{key} {default} (a request's default) is above "
                    f"the serve limit {limit} {getattr(limits, limit)}"
                )

    async def generate(self, inputs: list, *, beam_size: int | None = None,
                       max_length: int | None = None) -> list[dict[str, Any]]:
        """One ``{"text", "score"}`` per input, in order."""
        defaults = self.model.recipe.decode
        beam_size = defaults.beam_size if beam_size is None else beam_size
        max_length = defaults.max_length if max_length is None else max_length
        chunks = token_chunks(await self._rows(inputs), self.budget // beam_size)
        found = await asyncio.gather(*(self._batched(DecodeItem(chunk, beam_size, max_length)) for chunk in chunks))
        return self.model.outputs([hypotheses for part in found for hypotheses in part])

    async def stream(self, inputs: list, *, max_length: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Greedy decoding of ``inputs`` as it goes (``pipelines.streaming`` items: each
        token with the text it adds, then a final item per input). One stream decodes its
        own inputs, outside the batches: its client waits on every step. Steps run in a
        worker thread, one at a time, so the event loop keeps serving meanwhile."""
        if getattr(self.model, "ctc", False):
            raise DataError("stream: this speech model decodes with CTC, which has no step-by-step decoder to "
                            "stream from; send the request without 'stream'")
        rows = await self._rows(inputs)  # a bad upload fails here, before the first item
        items = self.streamer(rows, max_length=max_length)  # None: the recipe's decode.max_length
        done = object()
        while (item := await asyncio.to_thread(next, items, done)) is not done:
            yield item

    async def decode(self, items: list[DecodeItem]) -> list[list[list[Hypothesis]]]:
        """Hypotheses for each queued item's sources, decoded in a worker thread (the
        event loop keeps taking requests, which queue up for the next batch)."""
        found = await asyncio.to_thread(decode_grouped, self.decoder, items)
        groups = len({(item.beam_size, item.max_length) for item in items})
        self._stats.record(len(items), decoder_tokens(items), groups)
        return found


@dataclass(frozen=True)
class _FrameDecoder:
    """A :class:`SpeechRecognizer` or :class:`VideoCaptioner` as :func:`decode_grouped`
    sees a ``Translator``: its source rows are frames, so its ``generate_ids`` is
    ``generate_features`` (``generate_clips``)."""

    generate_ids: Callable[..., list[list[Hypothesis]]]


_OPTIONS = dict(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)


@serve.deployment(**_OPTIONS)
class TextClassifierDeployment(TextInputs, Classifier):
    """Serves one seq2vec text checkpoint: ``classify(texts)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.score, total_tokens, limits, batching)
        self.model = TextClassifier(checkpoint, max_tokens=self.budget)


@serve.deployment(**_OPTIONS)
class TranslatorDeployment(TextInputs, Generator):
    """Serves one seq2seq text checkpoint: ``generate(texts, beam_size=, max_length=)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.decode, decoder_tokens, limits, batching)
        self.model = self.decoder = Translator(checkpoint, max_tokens=self.budget)
        self.streamer = self.model.stream_ids


@serve.deployment(**_OPTIONS)
class AudioClassifierDeployment(AudioInputs, Classifier):
    """Serves one seq2vec audio checkpoint: ``classify(uploads)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.score, total_tokens, limits, batching)
        self.model = AudioClassifier(checkpoint, max_frames=self.budget)
        self._take_uploads(self.model.featurizer, limits)


@serve.deployment(**_OPTIONS)
class SpeechRecognizerDeployment(AudioInputs, Generator):
    """Serves one seq2seq audio checkpoint (speech to text):
    ``generate(uploads, beam_size=, max_length=)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.decode, decoder_tokens, limits, batching)
        self.model = SpeechRecognizer(checkpoint, max_frames=self.budget)
        self.decoder = _FrameDecoder(self.model.generate_features)
        self.streamer = self.model.stream_features
        self._take_uploads(self.model.featurizer, limits)


@serve.deployment(**_OPTIONS)
class VideoClassifierDeployment(VideoInputs, Classifier):
    """Serves one seq2vec video checkpoint: ``classify(uploads)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.score, total_tokens, limits, batching)
        self.model = VideoClassifier(checkpoint, max_frames=self.budget)
        self._take_uploads(self.model.featurizer, limits)


@serve.deployment(**_OPTIONS)
class VideoCaptionerDeployment(VideoInputs, Generator):
    """Serves one vec2seq or seq2seq video checkpoint (video to text):
    ``generate(uploads, beam_size=, max_length=)``."""

    def __init__(self, checkpoint: str, limits: ServeLimits, batching: bool = True) -> None:
        self._start(self.decode, decoder_tokens, limits, batching)
        self.model = VideoCaptioner(checkpoint, max_frames=self.budget)
        self.decoder = _FrameDecoder(self.model.generate_clips)
        self.streamer = self.model.stream_clips
        self._take_uploads(self.model.featurizer, limits)


DEPLOYMENTS = {
    ("classify", "text"): TextClassifierDeployment,
    ("generate", "text"): TranslatorDeployment,
    ("classify", "audio"): AudioClassifierDeployment,
    ("generate", "audio"): SpeechRecognizerDeployment,
    ("classify", "video"): VideoClassifierDeployment,
    ("generate", "video"): VideoCaptionerDeployment,
}
"""The deployment serving each ``(task, input)`` of ``meta.json``; each class has a
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
