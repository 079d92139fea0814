"""What stands in front of rxd's HTTP handlers: TLS, bearer tokens by scope, size limits, JSON errors.

Every error, from a handler, from aiohttp's routing (404, 405), its body limit (413) or its HTTP parser
(414 for a request line over http.max_url_chars, 400 for malformed requests), is a JSON object
`{"error": ..., "code": ...}` with the matching status.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from rxd.config import HttpConfig
from semcom.auth import Scope, TokenSet
from semcom.errors import SemcomError
from semcom.tls import server_ssl_context

log = logging.getLogger(__name__)

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
COOKIE = "semcom_token"
# Paths that need a token, by prefix (the longest match wins); the page and its static files need none
# (they hold no data), so a browser can load them and then log in with ?token=... once.
PATH_SCOPES: dict[str, Scope] = {"/api/": "read", "/api/clip": "admin", "/api/keyframe": "admin"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_json(status: int, message: str, code: str = "") -> web.Response:
    code = code or HTTPStatus(status).name
    return web.json_response({"error": message, "code": code}, status=status)


def path_scope(path: str) -> Scope | None:
    best = max((p for p in PATH_SCOPES if path.startswith(p)), key=len, default=None)
    return None if best is None else PATH_SCOPES[best]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON with its status: SemcomError by its gRPC code, aiohttp's own (404, 405, 413...)
    by theirs, anything else 500 (logged, the message kept short)."""
    try:
        return await handler(request)
    except SemcomError as err:
        return error_json(HTTP_STATUS.get(err.code.name, 500), str(err), err.code.name)
    except web.HTTPException as err:
        if err.status < 400:
            raise  # redirects and the like pass as they are
        response = error_json(err.status, err.reason)
        if "Allow" in err.headers:
            response.headers["Allow"] = err.headers["Allow"]
        return response
    except (ValueError, OverflowError) as err:  # a number that does not parse or fit, anywhere
        return error_json(400, f"bad value: {err}", "INVALID_ARGUMENT")
    except Exception as err:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return error_json(500, f"internal error: {type(err).__name__}", "INTERNAL")


class HttpGuard:
    """Middlewares, server arguments and TLS for the HTTP API, from `http` config and the token set."""

    def __init__(self, cfg: HttpConfig | None = None, tokens: TokenSet | None = None) -> None:
        self.cfg = cfg or HttpConfig()
        self.tokens = tokens or TokenSet(())
        self.ssl_context: ssl.SSLContext | None = server_ssl_context(self.cfg.tls)

    @property
    def max_body_bytes(self) -> int:
        return self.cfg.max_body_bytes

    @property
    def middlewares(self) -> list[Any]:
        return [json_errors, self.authorise]

    def runner(self, app: web.Application) -> web.AppRunner:
        """An AppRunner whose HTTP parser refuses request lines over http.max_url_chars, answering JSON."""
        return _JsonRunner(app, access_log=None, max_line_size=self.cfg.max_url_chars)

    @web.middleware
    async def authorise(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer token (header, or the cookie set by GET /?token=...) with the path's scope."""
        if request.path == "/" and "token" in request.query and self.tokens.enabled:
            return self._login(request)
        needed = path_scope(request.path)
        if needed is None or not self.tokens.enabled:
            return await handler(request)
        auth = request.headers.get("Authorization")
        if auth is None and COOKIE in request.cookies:
            auth = f"Bearer {request.cookies[COOKIE]}"
        ok, why = self.tokens.allows(auth, needed)
        if ok:
            return await handler(request)
        if self.tokens.check(auth) is None:
            response = error_json(401, why, "UNAUTHENTICATED")
            response.headers["WWW-Authenticate"] = 'Bearer realm="rxd"'
            return response
        return error_json(403, why, "PERMISSION_DENIED")

    def _login(self, request: web.Request) -> web.StreamResponse:
        """Keep a valid token in an HttpOnly, SameSite=Strict cookie and reload the page without it in the
        URL (so it stays out of history and logs)."""
        token = request.query["token"]
        if self.tokens.check(f"Bearer {token}") is None:
            return error_json(401, "unknown token", "UNAUTHENTICATED")
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="Strict", secure=self.ssl_context is not None, path="/"
        )
        return response


class _JsonRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors of its HTTP parser in JSON too."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and refuses once bytes were sent
        detail = HTTPStatus(status).phrase
        if isinstance(exc, LineTooLong):
            # The parser gives the line's first bytes: a target (origin or absolute form) is the URL.
            head = bytes(exc.args[0]) if isinstance(exc.args[0], bytes | bytearray) else b""
            url = head.startswith(b"/") or b"://" in head[:16]
            status = 414 if url else 431
            detail = f"{'URL' if url else 'a header'} longer than {exc.args[1]} bytes"
        elif isinstance(exc, BadHttpMessage):
            detail = f"malformed HTTP request: {type(exc).__name__}"
        response = error_json(status, detail)
        response.force_close()
        return response


class _JsonServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonRequestHandler(self, loop=self._loop, **self._kwargs)


class _JsonRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonServer  # same state, our connection handler
        return server
