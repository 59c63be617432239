"""The HTTP routes applications answer, described without HTTP: what serving builds a
``POST /v1/models/{name}/<route>`` from (``serving.app``). An application's
``ServeSpec.route`` is one of these or one of its own.

A route's request body follows from its flags: JSON ``{"inputs": [text, ...]}`` for
text models, multipart ``file`` parts for audio and video models, plus
``beam_size``/``max_length`` (and ``stream``) on ``decoding`` routes. Its answer is
``{<answer_key>: [one per input]}`` shaped by ``response``. A route may instead bring its
own JSON body (``request``) with one input in ``input_field`` (``single``): its answer
is then the response body itself, and ``files`` lets a client ask for one of its fields
as a file (``Accept: audio/midi``). No FastAPI here: the models are plain pydantic, and
the texts become the route's OpenAPI documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    """The most probable label."""
    score: float
    """Its probability."""
    scores: dict[str, float]
    """Probability of every label (they sum to 1)."""


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class GeneratedText(BaseModel):
    text: str
    score: float
    """Log-probability of ``text`` (and its end) under the model, divided by GNMT's length
    penalty ``((5 + tokens) / 6) ** alpha`` (``alpha``: the recipe's ``decode.alpha``)."""


class GenerateResponse(BaseModel):
    outputs: list[GeneratedText]


@dataclass(frozen=True)
class RouteSpec:
    name: str
    """The last path segment: ``/v1/models/{name}/<name>``."""
    answer_key: str
    """The response's list field: one item per input."""
    response: type[BaseModel]
    description: str
    """The route's documentation (``/docs``)."""
    json_doc: str
    """What a JSON request is (its schema's description)."""
    upload_doc: str
    """What an upload request is."""
    json_example: tuple[str, ...]
    decoding: bool = False
    """Requests take ``beam_size`` and ``max_length``, and may ``stream`` (greedy)."""
    request: Callable[[Any], type[BaseModel]] | None = None
    """A body of the route's own: its JSON request model made from the serve limits
    (``serving.limits.ServeLimits``), whose numbers it enforces. None: ``inputs``."""
    input_field: str = "inputs"
    """The request field holding the input(s); every other field is an option passed to
    the predictor's ``run``."""
    single: bool = False
    """One input per request (``input_field`` holds it, not a list); the answer is the
    response body itself, not a list under ``answer_key``."""
    files: tuple[tuple[str, str, str], ...] = ()
    """``(media type, answer field, description)``: a request with ``Accept: <media
    type>`` gets that base64 field's bytes as the body (on a list route, when it sent one
    input; for more, a 406)."""
    file_by_default: bool = False
    """A request for one input that does not ask for JSON (``Accept: application/json``)
    gets the first of ``files`` (speech synthesis: the WAV file)."""


CLASSIFY = RouteSpec(
    name="classify",
    answer_key="predictions",
    response=ClassifyResponse,
    description="""Label each input; `predictions[i]` belongs to input `i`.

Text models (no `input` on `/v1/models`) take JSON `{"inputs": [text, ...]}`.
Audio models (`"input": "audio"`) take `multipart/form-data` with one `file` part
per recording (WAV, FLAC, ...; any sample rate, mono or stereo); video models
(`"input": "video"`) the same with one encoded video file (MP4, WebM, ...) per part.""",
    json_doc="Texts to classify; one prediction comes back per text, in the same order.",
    upload_doc="Recordings or video files to classify (an audio or video model); one prediction\nper file, in order.",
    json_example=("a warm and funny film", "dull from start to end"),
)

GENERATE = RouteSpec(
    name="generate",
    answer_key="outputs",
    response=GenerateResponse,
    description="""Decode an output text for each input; `outputs[i]` belongs to input `i`.

Text models take JSON `{"inputs": [...], "beam_size": 4, "max_length": 128}`; speech
models (`"input": "audio"`) and video captioners (`"input": "video"`) take
`multipart/form-data` with one `file` part per recording or video file and optional
form fields `beam_size` and `max_length`. Options left out take the checkpoint
recipe's `decode` values.

With `"stream": true` (greedy decoding) the answer is JSON lines
(`application/x-ndjson`) sent while decoding: one line per output token, then a
final line per input with its `text` and `score`.

Conditional generators (models listing `conditions` on `/v1/models`) take
`{"condition": "positive", "num_samples": 4, "temperature": 0.8, "top_k": 0, "top_p": 0.9,
"seed": 0}` instead (or `beam_size` to search) and answer `num_samples` texts in
`outputs`; the same condition, options and seed give the same texts.""",
    json_doc="Source texts for a sequence-to-sequence model; one output per text, in order.",
    upload_doc="Recordings to transcribe (a speech model) or video files to caption (a video\ncaptioner); "
               "one output per file, in order.",
    json_example=("the cat sat on the mat",),
    decoding=True,
)
