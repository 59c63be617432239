"""A request's body, read by what its model takes: JSON texts or multipart uploads.

Text, audio, video and image models answer the same routes (``docs/http-api.md``), but
FastAPI declares one body per route, so the classify and generate routes read their body
here, after the ``{name}`` lookup (an unknown model is a 404 whatever the body says)::

    text model          application/json     -> json.loads -> request model (strict) -> (texts, options)
                        anything else        -> 415 naming what the model takes
    audio/video/image   multipart/form-data  -> form -> upload model (file parts)    -> (uploads, options)
    model               anything else        -> 415 naming what the model takes

Uploads stay undecoded bytes here; the model replica reads them (``serving.audio``,
``serving.video``, ``serving.image``).

Failures are raised as FastAPI raises them for a body it parsed itself (malformed JSON
and pydantic errors as ``RequestValidationError`` with ``body`` locations), so
``serving.errors`` words them all the same way. Both bodies are documented in
``/openapi.json`` by :func:`openapi_body`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from pipelines.apps.routes import RouteSpec
from serving.body_limit import MULTIPART, media_type
from serving.catalog import ModelCard
from serving.errors import NOT_JSON, UPLOAD_EXAMPLE, UPLOAD_FORMATS
from serving.schemas import INPUT_FIELDS, UPLOAD_FIELD, RequestModels
from serving.uploads import Upload


async def read_inputs(request: Request, card: ModelCard, models: RequestModels) -> tuple[list, dict[str, Any]]:
    """``(inputs, options)`` of a request to the model of ``card``: its texts or
    :class:`Upload` s, and the other fields of its request model (generate's
    ``beam_size`` and ``max_length``) as keyword arguments for the model deployment."""
    route = card.app.serve.route
    schema = models.body(route, card.input)
    field = route.input_field if route.request is not None else INPUT_FIELDS[card.input]
    if card.input in UPLOAD_FORMATS:
        body, inputs = await _read_uploads(request, card, schema)
    else:
        body = await _read_json(request, card, schema)
        inputs = [getattr(body, field)] if route.single else getattr(body, field)
    return inputs, body.model_dump(exclude={field})


async def _read_json(request: Request, card: ModelCard, schema: type[BaseModel]) -> BaseModel:
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    sent = media_type(request.headers)
    if not _is_json(sent):
        if card.input == "text":
            raise _unsupported(card, sent, "texts as JSON", NOT_JSON)
        raise _unsupported(card, sent, "JSON", "send it with 'Content-Type: application/json'")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
                 "ctx": {"error": exc.msg}}
        raise RequestValidationError([error]) from None
    except UnicodeDecodeError as exc:
        raise HTTPException(400) from exc  # serving.errors names the byte
    except RecursionError:  # json recurses per [ or {: a few kB of them exhaust the stack (was a 500)
        raise HTTPException(400, "malformed JSON body: arrays or objects nested too deeply") from None
    except ValueError:  # not a JSONDecodeError: Python refuses to convert such long integers (was a 500)
        limit = sys.get_int_max_str_digits()
        raise HTTPException(400, f"malformed JSON body: an integer with more than {limit} digits") from None
    return validated(schema, data)


async def _read_uploads(request: Request, card: ModelCard, schema: type[BaseModel]) -> tuple[BaseModel, list[Upload]]:
    sent = media_type(request.headers)
    if sent != MULTIPART:
        how = f"send {UPLOAD_EXAMPLE} ({UPLOAD_FORMATS[card.input]})"
        raise _unsupported(card, sent, f"{card.input} uploads", how)
    try:
        form = await request.form()
    except HTTPException as exc:  # Starlette's 400 for a malformed multipart body
        raise HTTPException(400, f"malformed multipart/form-data body: {exc.detail}") from None
    try:
        body = validated(schema, form_fields(form))
        files = getattr(body, UPLOAD_FIELD)
        return body, [Upload(part_name(i, file.filename), await file.read()) for i, file in enumerate(files)]
    finally:
        await form.close()


def _unsupported(card: ModelCard, sent: str, takes: str, how: str) -> HTTPException:
    """415 saying what the model takes instead of what was sent, and how to send it."""
    return HTTPException(415, f"model {card.name!r} takes {takes}, not {sent or 'a body without Content-Type'}: {how}")


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def validated(schema: type[BaseModel], data: Any) -> BaseModel:
    """``data`` as ``schema``; a ``RequestValidationError`` located in the body, as FastAPI raises."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


def form_fields(form: FormData) -> dict[str, Any]:
    """A parsed form as the upload models take it: the ``file`` parts as a list (one per
    file), any other field as its value, or as a list when it was sent more than
    once (which the model then rejects as not an integer)."""
    fields: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        fields.setdefault(key, []).append(value)
    return {key: values if key == UPLOAD_FIELD or len(values) > 1 else values[0] for key, values in fields.items()}


def part_name(index: int, filename: str | None) -> str:
    """How errors name an upload: ``file[1] 'seven.wav'`` (``file[1]`` without a file name)."""
    return f"file[{index}] {filename!r}" if filename else f"file[{index}]"


def openapi_body(models: RequestModels, routes: list[RouteSpec]) -> dict[str, Any]:
    """The ``openapi_extra`` of one path: the bodies its ``routes`` take (a route with a
    body of its own: JSON only), one of them when several applications share the path
    (``anyOf``). FastAPI documents only a body it parses itself; these models are flat
    (no ``$defs`` to resolve)."""
    json_bodies = [models.body(route, "text").model_json_schema() for route in routes]
    content = {"application/json": {"schema": json_bodies[0] if len(json_bodies) == 1 else {"anyOf": json_bodies}}}
    forms = [models.body(route, "video").model_json_schema() for route in routes if route.request is None]
    if forms:
        content[MULTIPART] = {"schema": forms[0]}  # audio's and image's too; one form body a path
    return {"requestBody": {"required": True, "content": content}}
