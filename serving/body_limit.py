"""Reject oversized request bodies with a JSON 413 before any parsing happens.

A pure ASGI middleware, outermost in the app, so no route (and no error handler) ever
sees a body larger than the limit. Two checks:

1. a declared ``Content-Length`` over the limit is answered at once, unread;
2. the bytes actually received are counted, which catches chunked uploads (no
   ``Content-Length``) and clients that send more than they declared.

The body is buffered (never more than the limit) and replayed to the app unchanged.
``multipart/form-data`` bodies (audio and video uploads) have a limit of their own,
larger than that of JSON bodies; which one applies is decided by the declared
``Content-Type``, so a request cannot get past the JSON limit without being parsed as a
form.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_response

MULTIPART = "multipart/form-data"


def media_type(headers: Headers) -> str:
    """``Content-Type`` without its parameters, lower case (``multipart/form-data``)."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit(self, headers: Headers) -> tuple[int, str]:
        """The byte limit of a request with these headers, and the setting it comes from."""
        if media_type(headers) == MULTIPART:
            return self.max_upload_bytes, "max_upload_bytes"
        return self.max_bytes, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit(headers)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit[0]:
            await _too_large(scope, receive, send, f"{int(declared)} bytes", limit)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit[0]:
                await _too_large(scope, receive, send, f"more than {limit[0]} bytes", limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


async def _too_large(scope: Scope, receive: Receive, send: Send, size: str, limit: tuple[int, str]) -> None:
    message = f"request body is too large ({size}); the limit is {limit[0]} bytes ({limit[1]})"
    await error_response(413, message, headers={"Connection": "close"})(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then defers to the real one (which
    reports the client's disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
