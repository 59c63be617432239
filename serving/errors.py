"""Every HTTP error as JSON ``{"error": "<message>"}``, with a 4xx for client mistakes.

FastAPI's own error bodies (``{"detail": [...]}``) are replaced here, in one place, by
one readable sentence that names what is wrong and where (``inputs[2]: must not be
empty``). A 5xx only ever comes from the catch-all handler, and that is a bug.

Some client mistakes only show in the model replica (an upload that is not audio,
video or an image, or one too long or too large): the replica raises
:class:`~pipelines.errors.DataError` (or :class:`TooLarge`), Ray carries it back to the
ingress, and :func:`client_error` turns it into the 422 (413) it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pipelines.errors import DataError, InputTooLarge, user_error

BODY_EXAMPLE = '{"inputs": ["some text"]}'
NOT_JSON = f"the body must be JSON sent with 'Content-Type: application/json', e.g. {BODY_EXAMPLE}"
UPLOAD_EXAMPLE = "one or more multipart/form-data parts named 'file', one file per part"
UPLOAD_FORMATS = {
    "audio": "WAV, FLAC or another format libsndfile reads",
    "video": "MP4, WebM or another video file FFmpeg reads; not frame images",
    "image": "PNG or JPEG (BMP and WebP too), one image per part",
}
"""What an upload of each ``ModelCard.input`` may be, for messages that know the model."""

_REQUIRED_HINTS = {"body": f"e.g. {BODY_EXAMPLE}", "file": f"send {UPLOAD_EXAMPLE}"}

_EXPECTED = {
    "string_type": "a string",
    "list_type": "an array",
    "int_type": "an integer",
    "int_parsing": "an integer",  # a form field's text that is not one
    "float_type": "a number",
    "bool_type": "a boolean",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def json_type(value: Any) -> str:
    """How a JSON client would name ``value``'s type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "inputs", 2)`` -> ``inputs[2]``; the body itself is ``body``."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as ``<field>: <what is wrong>``."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    where = field_path(error["loc"])
    if kind == "missing":
        what = f"is required, {_REQUIRED_HINTS[where]}" if where in _REQUIRED_HINTS else "is required"
    elif kind == "extra_forbidden":
        what = "is not a known field"
    elif kind == "too_short":
        minimum = ctx.get("min_length")
        what = ("must not be empty" if minimum == 1
                else f"must have at least {minimum} items, got {ctx.get('actual_length')}")
    elif kind == "too_long":
        what = f"has {ctx.get('actual_length')} items; the limit is {ctx.get('max_length')}"
    elif kind == "string_too_long":
        length = len(value) if isinstance(value, str) else "too many"
        what = f"is {length} characters long; the limit is {ctx.get('max_length')}"
    elif kind == "greater_than_equal":
        what = f"must be >= {ctx.get('ge')}, got {value!r}"
    elif kind == "less_than_equal":
        what = f"must be <= {ctx.get('le')}, got {value!r}"
    elif kind == "string_unicode":
        what = "is not valid Unicode (an unpaired surrogate such as \\ud800)"
    elif kind in _EXPECTED:
        what = f"must be {_EXPECTED[kind]}, got {json_type(value)}"
    else:
        what = str(error.get("msg", kind))
    return f"{where}: {what}"


def validation_error_response(errors: Sequence[dict[str, Any]]) -> JSONResponse:
    """400 for a body that is not JSON, 415 for a non-JSON content type, else 422."""
    for error in errors:
        if error["type"] == "json_invalid":
            position = error["loc"][-1] if len(error["loc"]) > 1 else "?"
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(400, f"malformed JSON body: {reason} (at character {position})")
        if tuple(error["loc"]) == ("body",) and isinstance(error.get("input"), (bytes, bytearray)):
            return error_response(415, NOT_JSON)
    return error_response(422, "; ".join(describe_error(e) for e in errors))


class TooLarge(InputTooLarge):
    """Client input over a size limit that only the model replica can measure (an
    upload's duration, a clip's frames, an image's pixels): answered 413 like an
    oversized body, not 422."""


def client_error(exc: BaseException) -> HTTPException | None:
    """The HTTP error for a model replica's :class:`DataError` about the client's input,
    found under Ray's wrapping; None for anything else (a bug: 500)."""
    error = user_error(exc)
    if not isinstance(error, DataError):
        return None
    # Ray re-raises a replica's error as a RayTaskError that is also an instance of its
    # class, but whose str() is the remote traceback (file paths, pid, node IP): the
    # client gets the original's message.
    original = getattr(error, "cause", None)
    if isinstance(original, DataError):
        error = original
    return HTTPException(413 if isinstance(error, InputTooLarge) else 422, str(error))


def http_error_message(request: Request, exc: HTTPException) -> str:
    """Our own ``HTTPException`` details are already sentences; Starlette's routing
    errors ("Not Found", "Method Not Allowed") are rewritten to say what to do."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid UTF-8: {cause.reason} at byte {cause.start}"
    default = _phrase(exc.status_code)
    if exc.detail and exc.detail != default:
        return str(exc.detail)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return f"no route for {where}; the API is described at /docs"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"method {request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
    if exc.status_code == 400:
        return f"could not read the body of {where}"
    return default or f"HTTP {exc.status_code}"


def _phrase(status: int) -> str | None:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception FastAPI can raise through :func:`error_response`."""

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, http_error_message(request, exc), headers=exc.headers)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc.errors())

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}) while serving {request.url.path}; "
                                   "this is a bug, see the Serve replica logs")

    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_bug)
