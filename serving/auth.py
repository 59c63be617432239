"""Optional bearer-token authentication of the HTTP API.

    RAYSEQ_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        rayseq serve CHECKPOINT --host 0.0.0.0

With ``RAYSEQ_API_TOKEN`` set where the application is built (``rayseq serve``, or the
process Serve runs ``serving.app:app_builder`` in), every request must carry
``Authorization: Bearer <token>``, except ``/healthz``::

    no Authorization header, or not a Bearer one  -> 401 {"error": ...}, WWW-Authenticate: Bearer
    a Bearer token other than the server's         -> 403 {"error": ...}
    the server's token                             -> the route (limits, validation, model)

``/healthz`` stays open: load balancers and Kubernetes probes send no credentials, and it
tells nothing but "ok". ``/v1/models``, ``/docs`` and ``/openapi.json`` are guarded like
the model routes, since they name the models and their labels.

The token is read once, on the driver, and reaches the ingress replica as an argument
(an :class:`ApiToken`, whose ``repr`` hides it): a replica's environment is not the
driver's. It is never logged, never echoed in an error, and ``/openapi.json`` declares
only the scheme. Without the variable the API is open, which ``rayseq serve`` allows on
loopback only (``serving.cli``).
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.errors import ConfigError
from serving.errors import error_response

TOKEN_ENV = "RAYSEQ_API_TOKEN"
OPEN_PATHS = frozenset({"/healthz"})
"""Routes answered without a token."""
MIN_TOKEN_CHARS = 16
SCHEME_NAME = "bearerAuth"
"""The security scheme's name in ``/openapi.json``."""

# RFC 6750's b64token: what a client can send in the header unquoted.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rayseq"'}


@dataclass(frozen=True)
class ApiToken:
    """The token clients must present; ``repr`` and messages never show it."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < MIN_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(self.value):
            raise ConfigError(
                f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 - . _ ~ + / "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ApiToken | None:
        """The token in ``RAYSEQ_API_TOKEN``, or None when it is unset. Set but empty
        (a secret that failed to mount) is an error, not an open server."""
        value = environ.get(TOKEN_ENV)
        if value is None:
            return None
        if not value.strip():
            raise ConfigError(f"{TOKEN_ENV} is set but empty; unset it to serve without authentication")
        return cls(value)

    def accepts(self, presented: bytes) -> bool:
        """Constant-time comparison: the time taken does not tell how much matched."""
        return hmac.compare_digest(self.value.encode("ascii"), presented)


def require_token(app: FastAPI, token: ApiToken | None) -> None:
    """Guard every route of ``app`` but :data:`OPEN_PATHS` with ``token`` (nothing when
    None). Call it after the other middleware: the last added runs first, so a request
    without the token is answered before its body is read."""
    if token is None:
        return
    app.add_middleware(BearerTokenAuth, token=token)
    _declare_scheme(app)


class BearerTokenAuth:
    """Pure ASGI middleware, so it also guards ``/docs`` and ``/openapi.json``, which
    FastAPI adds as plain routes that route dependencies never see."""

    def __init__(self, app: ASGIApp, token: ApiToken) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            response = error_response(401, "this server needs 'Authorization: Bearer <token>' on every request "
                                           "but /healthz", headers=_CHALLENGE)
        elif not self.token.accepts(credentials.encode("latin-1")):
            response = error_response(403, "the bearer token is not this server's")
        else:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # none today; a future one must not be a way around the token
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        else:
            await response(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the ``root_path`` a proxy mounted it under."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


def _declare_scheme(app: FastAPI) -> None:
    """Add the bearer scheme to ``/openapi.json`` (Swagger UI's "Authorize" button),
    required everywhere but on :data:`OPEN_PATHS`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI caches it in app.openapi_schema
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[SCHEME_NAME] = {"type": "http", "scheme": "bearer",
                                    "description": f"the token the server was started with ({TOKEN_ENV})"}
            schema["security"] = [{SCHEME_NAME: []}]
            for path in OPEN_PATHS:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = []
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
