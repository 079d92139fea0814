"""Bearer tokens with read and admin scopes: stored hashed, checked per gRPC call and per HTTP request."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc import aio
from pydantic import ValidationError

from semcom.config import AuthConfig, ClientAuthConfig, TokenEntry
from semcom.errors import InvalidInput

log = logging.getLogger(__name__)

Scope = Literal["read", "admin"]
_RANK: dict[str, int] = {"read": 1, "admin": 2}

# The scope each method needs. None: no token (the Link is authenticated by mTLS and the frames' AEAD;
# supervisors must reach health). A method not listed needs admin, so a new one is closed until placed here.
METHOD_SCOPES: dict[str, Scope | None] = {
    "/semcom.v1.Link/Transmit": None,
    "/semcom.v1.Backhaul/Open": None,  # opened by txd, like the Link (mTLS between the daemons)
    "/semcom.v1.Sites/List": "read",
    "/grpc.health.v1.Health/Check": None,
    "/grpc.health.v1.Health/Watch": None,
    "/semcom.v1.Receiver/Query": "read",
    "/semcom.v1.Receiver/GetRecord": "read",
    "/semcom.v1.Receiver/Stats": "read",
    "/semcom.v1.Receiver/FetchClip": "admin",
    "/semcom.v1.Receiver/FetchKeyframe": "admin",
    "/semcom.v1.Transmitter/Status": "read",
    "/semcom.v1.Transmitter/Announce": "admin",
    "/semcom.v1.Transmitter/Ingest": "admin",
    "/semcom.v1.Transmitter/FetchClip": "admin",
    "/semcom.v1.Transmitter/FetchKeyframe": "admin",
    "/semcom.v1.ChannelAdmin/GetChain": "admin",
    "/semcom.v1.ChannelAdmin/SetChain": "admin",
    "/semcom.v1.ChannelAdmin/GetStats": "admin",
}
_REFLECTION = "/grpc.reflection."


def method_scope(method: str) -> Scope | None:
    if method.startswith(_REFLECTION):
        return "read"
    return METHOD_SCOPES.get(method, "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe base64 (256 bits; no offline guessing of the hash)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Grant:
    name: str
    scope: Scope


class TokenSet:
    """The accepted tokens (hashes only). `check` compares in constant time."""

    def __init__(self, entries: tuple[TokenEntry, ...]) -> None:
        self._by_hash = {e.sha256: Grant(e.name, e.scope) for e in entries}

    @classmethod
    def from_config(cls, cfg: AuthConfig) -> TokenSet:
        """The config's tokens and those of its tokens_file ([[tokens]] or [[auth.tokens]] tables, as
        `semcom token` prints them). A tokens_file that holds none is an error, never an open door."""
        entries = list(cfg.tokens)
        if cfg.tokens_file is not None:
            try:
                tree = tomllib.loads(cfg.tokens_file.read_text())
                tables = [*tree.get("tokens", []), *tree.get("auth", {}).get("tokens", [])]
                found = [TokenEntry.model_validate(t) for t in tables]
            except (OSError, tomllib.TOMLDecodeError, ValidationError, AttributeError) as err:
                raise InvalidInput(f"auth.tokens_file {cfg.tokens_file}: {err}") from err
            if not found:
                raise InvalidInput(f"auth.tokens_file {cfg.tokens_file} holds no [[tokens]] table")
            entries += found
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def check(self, authorization: str | None) -> Grant | None:
        """The grant of an `Authorization: Bearer <token>` value, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hash_token(authorization[len("Bearer ") :].strip())
        found = None
        for known, grant in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = grant
        return found

    def allows(self, authorization: str | None, needed: Scope | None) -> tuple[bool, str]:
        """(allowed, why not): no token needed, or a known token whose scope covers `needed`."""
        if needed is None or not self.enabled:
            return True, ""
        grant = self.check(authorization)
        if grant is None:
            return False, "missing or unknown bearer token"
        if _RANK[grant.scope] < _RANK[needed]:
            return False, f"token {grant.name!r} has scope {grant.scope}; this needs {needed}"
        return True, ""


# -- gRPC server ---------------------------------------------------------------------------------------

if TYPE_CHECKING:
    _ServerInterceptor = aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = aio.ServerInterceptor


def _denied(handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, why: str) -> Any:
    async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, why)

    async def streaming(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, why)
        yield  # pragma: no cover - makes this an async generator; abort always raises

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, des, ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
    return grpc.stream_stream_rpc_method_handler(streaming, des, ser)


class AuthInterceptor(_ServerInterceptor):
    """Refuses a call whose method needs a scope its bearer token lacks: UNAUTHENTICATED without a known
    token, PERMISSION_DENIED with a read token on an admin method."""

    def __init__(self, tokens: TokenSet) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        auth = metadata.get("authorization")
        ok, why = self.tokens.allows(auth if isinstance(auth, str) else None, method_scope(method))
        if ok:
            return handler
        known = self.tokens.check(auth if isinstance(auth, str) else None) is not None
        log.warning("refused %s: %s", method, why)
        code = grpc.StatusCode.PERMISSION_DENIED if known else grpc.StatusCode.UNAUTHENTICATED
        return _denied(handler, code, why)  # type: ignore[no-any-return]


# -- gRPC clients -------------------------------------------------------------------------------------


def client_token(cfg: ClientAuthConfig) -> str:
    """The token text a client config names (its file wins), "" for none."""
    if cfg.token_file is not None:
        try:
            return cfg.token_file.read_text().strip()
        except OSError as err:
            raise InvalidInput(f"token_file {cfg.token_file}: cannot read ({err.strerror})") from err
    return cfg.token.get_secret_value().strip()


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


if TYPE_CHECKING:
    _UU = aio.UnaryUnaryClientInterceptor[Any, Any]
    _US = aio.UnaryStreamClientInterceptor[Any, Any]
    _SU = aio.StreamUnaryClientInterceptor[Any, Any]
    _SS = aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UU, _US = aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor
    _SU, _SS = aio.StreamUnaryClientInterceptor, aio.StreamStreamClientInterceptor


class _Bearer:
    """Adds `authorization: Bearer <token>` to a call's metadata."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, d: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*_with_token(d.metadata, self.token))
        return aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)


# An asyncio channel files each interceptor under the first call kind it is an instance of: one class each.
class _BearerUU(_Bearer, _UU):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerUS(_Bearer, _US):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerSU(_Bearer, _SU):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _BearerSS(_Bearer, _SS):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class SyncBearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the bearer token to every call of a blocking channel (the CLI's)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, d: Any) -> _Details:
        return _Details(
            d.method,
            d.timeout,
            _with_token(d.metadata, self.token),
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """`channel` sending `token` on every call; `channel` itself when the token is empty."""
    return grpc.intercept_channel(channel, SyncBearerInterceptor(token)) if token else channel


def bearer_interceptors(token: str) -> list[aio.ClientInterceptor]:
    """Interceptors sending `token` on every call of an asyncio channel (none for an empty token)."""
    if not token:
        return []
    return [cast(aio.ClientInterceptor, kind(token)) for kind in (_BearerUU, _BearerUS, _BearerSU, _BearerSS)]


_SECRET_KEYS = ("token", "password", "secret", "sha256", "api_key")


def _redact_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def redacted(tree: Any) -> Any:
    """A config dump with secrets hidden (for --check-config): values of keys that name a token, password,
    secret or hash, and passwords inside URLs (rtsp://user:pw@cam/...)."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            secret = any(word in str(key).lower() for word in _SECRET_KEYS) and not str(key).endswith("_file")
            out[key] = "***" if secret and isinstance(value, str) and value else redacted(value)
        return out
    if isinstance(tree, list | tuple):
        return [redacted(v) for v in tree]
    if isinstance(tree, str) and "@" in tree and "://" in tree:
        return _redact_url(tree)
    return tree
