"""HTTP request and response bodies (pydantic), as documented in ``docs/http-api.md``.

Request models carry the application's limits as ordinary pydantic constraints, so the
same numbers that reject a request also show in ``/openapi.json``. Because limits are
chosen per application, request models are made by :func:`request_models`;
``ClassifyRequest`` and ``GenerateRequest`` at module level use the default limits.

Generate options a request leaves out (``beam_size``, ``max_length``: None here) are
filled in by the model deployment from the checkpoint recipe's ``decode`` section, so
one application can serve models with different defaults.

Requests are strict (no ``"4"`` -> ``4``, no ``true`` -> ``1``) and reject unknown
fields, so a typo such as ``beam_szie`` is reported instead of silently ignored.

Audio, video and image models take the same routes as ``multipart/form-data``: ``file`` parts
in place of ``inputs``, and generate's options as form fields, whose values are always
text (so there ``"4"`` is 4). The upload models validate the parsed form
(``serving.bodies``) and document it in ``/openapi.json``.
"""

# No ``from __future__ import annotations``: the request models are built inside a
# function and pydantic must see their real annotation objects.

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipelines import apps
from pipelines.apps.routes import RouteSpec
from serving.limits import ServeLimits


def _not_blank(text: str) -> str:
    """A text of only whitespace tokenizes to nothing; the model would see ``[UNK]``.
    (Unpaired surrogates, which the tokenizer cannot take, pydantic rejects itself.)"""
    if not text.strip():
        raise PydanticCustomError("blank_text", "must not be empty")
    return text


def _file_part(value: Any) -> Any:
    """A form part named ``file`` without a filename arrives as text, not as a file."""
    if isinstance(value, str):
        raise PydanticCustomError("file_part", "must be a file part (one with a filename), got a text field")
    return value


def _stream_is_greedy(request: Any) -> Any:
    """Streaming shows the one hypothesis greedy search keeps; a beam's best is only known
    at the end."""
    if request.stream and request.beam_size not in (None, 1):
        raise PydanticCustomError("stream_beam", "stream decodes greedily: beam_size must be 1 or left out, got "
                                                 "{beam_size}", {"beam_size": request.beam_size})
    return request


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")  # not strict: form fields are text


UPLOAD_FIELD = "file"
"""The form field of every upload, whatever its medium."""

INPUT_FIELDS = {"text": "inputs", "audio": UPLOAD_FIELD, "video": UPLOAD_FIELD, "image": UPLOAD_FIELD}
"""The field holding a request's inputs, by what the model takes (``ModelCard.input``);
the other fields are options passed on to the model deployment."""


@dataclass(frozen=True)
class RequestModels:
    """The request body models of one application (one set of limits), for every route
    the applications answer (``pipelines.apps.routes``): JSON bodies for text models,
    multipart forms for audio, video and image models."""

    models: dict[tuple[str | RouteSpec, bool], type[BaseModel]]
    """``(route, uploads)`` -> body model; ``route`` a :class:`RouteSpec`, or its name for
    the first route of that name (two applications may answer one path with different
    bodies: a translator's and a conditional generator's ``generate``)."""

    def body(self, route: str | RouteSpec, input: str) -> type[BaseModel]:
        """The model of a ``route`` request to a model taking ``input``: the JSON model for
        ``text``, the form model for anything uploaded (``audio``, ``video``, ``image``)."""
        return self.models[route, input != "text"]

    def bodies(self, name: str, routes: Iterable[RouteSpec]) -> list[RouteSpec]:
        """The routes of ``routes`` called ``name`` (each a body on that path)."""
        return [route for route in routes if route.name == name and (route, False) in self.models]


def request_models(limits: ServeLimits, routes: Iterable[RouteSpec] | None = None) -> RequestModels:
    """Request models that enforce ``limits`` for ``routes`` (default: every
    application's): 1..``max_inputs`` texts, each non-blank and at most ``max_chars``
    characters, or 1..``max_inputs`` files; a decoding route's ``beam_size`` and
    ``max_length`` bounded by ``max_beam_size`` and ``max_generate_length``. Each is
    named ``<Route>Request`` (JSON) or ``<Route>Upload`` (multipart)."""
    Text = Annotated[str, StringConstraints(max_length=limits.max_chars), AfterValidator(_not_blank)]
    Texts = Annotated[
        list[Text],
        Field(min_length=1, max_length=limits.max_inputs,
              description=f"1 to {limits.max_inputs} non-empty texts of at most {limits.max_chars} characters"),
    ]
    Files = Annotated[
        list[Annotated[UploadFile, BeforeValidator(_file_part)]],
        Field(min_length=1, max_length=limits.max_inputs,
              description=f"1 to {limits.max_inputs} files, one part per file, all named 'file': recordings "
                          f"for audio models (WAV, FLAC, ...; any sample rate, mono or stereo; at most "
                          f"{limits.max_audio_seconds:g} s each or the model's data.audio.max_seconds if lower), "
                          f"video files for video models (MP4, WebM, ...; at most {limits.max_video_seconds:g} s "
                          "each or the model's data.video.max_seconds if lower, and its data.video.max_frames)"),
    ]
    BeamSize = Annotated[int | None, Field(
        ge=1, le=limits.max_beam_size, examples=[4],
        description=f"beams kept while decoding, 1 (greedy) to {limits.max_beam_size}; "
                    "default: the model recipe's decode.beam_size (4 unless the recipe says otherwise)")]
    MaxLength = Annotated[int | None, Field(
        ge=1, le=limits.max_generate_length, examples=[128],
        description=f"most output tokens per input, 1 to {limits.max_generate_length}; "
                    "default: the model recipe's decode.max_length (128 unless the recipe says otherwise)")]
    Stream = Annotated[bool, Field(
        description="answer as JSON lines (application/x-ndjson) while decoding: a line "
                    '{"type": "token", "index", "token", "delta"} per output token, then '
                    '{"type": "final", "index", "delta", "text", "score", "tokens"} per input; '
                    "an input's deltas joined are its text. Greedy decoding: beam_size must be 1 or left out")]
    decoding = {"beam_size": (BeamSize, None), "max_length": (MaxLength, None), "stream": (Stream, False)}
    validators = {"_greedy_stream": model_validator(mode="after")(_stream_is_greedy)}

    models: dict[tuple[str | RouteSpec, bool], type[BaseModel]] = {}
    for route in routes if routes is not None else all_routes():
        if route.request is not None:  # a body of its own, JSON only
            models[route, False] = models[route, True] = route.request(limits)
        else:
            title = route.name.capitalize()
            options = decoding if route.decoding else {}
            checks = validators if route.decoding else {}
            models[route, False] = create_model(
                f"{title}Request", __base__=_Request, __doc__=route.json_doc, __validators__=checks,
                inputs=(Texts, Field(examples=[list(route.json_example)])), **options)
            models[route, True] = create_model(
                f"{title}Upload", __base__=_Form, __doc__=route.upload_doc, __validators__=checks,
                file=(Files, ...), **options)
        for uploads in (False, True):
            models.setdefault((route.name, uploads), models[route, uploads])
    return RequestModels(models)


def all_routes() -> list[RouteSpec]:
    """Every route some application answers, in the order the applications are found
    (by name), each once; several may share a path (``generate``)."""
    return list(dict.fromkeys(app.serve.route for app in apps.discover().values()))


def served_routes() -> list[RouteSpec]:
    """The first route of each path, in the order :func:`all_routes` gives them: one
    endpoint each."""
    found: dict[str, RouteSpec] = {}
    for route in all_routes():
        found.setdefault(route.name, route)
    return list(found.values())


_DEFAULT_MODELS = request_models(ServeLimits())
ClassifyRequest = _DEFAULT_MODELS.body("classify", "text")
GenerateRequest = _DEFAULT_MODELS.body("generate", "text")


class ModelInfo(BaseModel):
    name: str
    """The ``{name}`` of ``/v1/models/{name}/...``."""
    kind: str
    """Application shape: ``seq2vec``, ``seq2seq`` or ``vec2seq``."""
    task: str
    """The route the model answers: ``classify`` or ``generate``."""
    labels: list[str] | None = None
    """Label names (classifiers only)."""
    speakers: list[str] | None = None
    """Voices a speech synthesis model speaks in (synthesize's ``speaker``)."""
    words: list[str] | None = None
    """Words a speech synthesis model says (digits also by name: "7" as "seven")."""
    conditions: list[str] | None = None
    """What a conditional generator writes to order (generate's ``condition``)."""
    input: str | None = None
    """``audio``, ``video`` or ``image`` for models that take uploads (multipart ``file`` parts) on
    their route; left out for text models, which take JSON ``inputs``."""


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorBody(BaseModel):
    """Every error, 4xx or 5xx, has this body."""

    error: str
