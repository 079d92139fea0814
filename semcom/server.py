"""gRPC server plumbing shared by the daemons: error mapping, health, reflection, lifecycle and signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from semcom.auth import AuthInterceptor, TokenSet
from semcom.config import AuthConfig, ServerConfig
from semcom.errors import BackendDead, SemcomError
from semcom.tls import add_port

log = logging.getLogger(__name__)

# The stubs make ServerInterceptor generic; at run time it is a plain class.
if TYPE_CHECKING:
    _InterceptorBase = aio.ServerInterceptor[Any, Any]
else:
    _InterceptorBase = aio.ServerInterceptor

# grpc's handler signatures are loosely typed (sync and aio share them); the wrappers only pass values on.
Handler = Callable[..., Any]


async def _abort(
    context: aio.ServicerContext[Any, Any], err: Exception, on_dead: Callable[[BackendDead], None]
) -> None:
    if isinstance(err, BackendDead):
        on_dead(err)
    if isinstance(err, SemcomError):
        await context.abort(err.code, str(err))
    log.exception("unexpected error in handler")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")


def _wrap_unary(fn: Handler, on_dead: Callable[[BackendDead], None]) -> Handler:
    async def wrapper(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await fn(request, context)
        except (SemcomError, Exception) as err:
            if isinstance(err, asyncio.CancelledError) or _is_abort(err):
                raise
            await _abort(context, err, on_dead)

    return wrapper


def _wrap_stream(fn: Handler, on_dead: Callable[[BackendDead], None]) -> Handler:
    async def wrapper(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except (SemcomError, Exception) as err:
            if isinstance(err, asyncio.CancelledError) or _is_abort(err):
                raise
            await _abort(context, err, on_dead)

    return wrapper


def _is_abort(err: BaseException) -> bool:
    # context.abort() raises this internal exception to end the call; it must pass through untouched.
    return type(err).__name__ == "AbortError"


class ErrorInterceptor(_InterceptorBase):
    """Maps each SemcomError subclass to its gRPC status once, for every method of every service; a
    BackendDead is also reported to `on_dead`, which starts the daemon's drain."""

    def __init__(self, on_dead: Callable[[BackendDead], None] = lambda err: None) -> None:
        self.on_dead = on_dead

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, self.on_dead),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, self.on_dead),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, self.on_dead),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, self.on_dead),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class GrpcServer:
    """An aio server with health checking and (unless switched off) reflection, bound on creation with TLS
    when the config has a certificate, started by `start()`. With tokens in `auth`, each call's bearer
    token must cover its method's scope (semcom.auth.METHOD_SCOPES).

    A handler that raises BackendDead (a model or server the daemon cannot work without is gone) turns
    health NOT_SERVING at once and sets `dead`, on which the daemon's main loop drains and exits non-zero.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        register: Sequence[Callable[[aio.Server], None]],
        service_names: Sequence[str],
        auth: AuthConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.dead: asyncio.Future[BackendDead] = asyncio.get_running_loop().create_future()
        self._not_serving: asyncio.Future[None] | None = None
        tokens = TokenSet.from_config(auth) if auth is not None else None
        # The token check runs first: a refused call never reaches a handler or the error mapping.
        interceptors: list[aio.ServerInterceptor[Any, Any]] = [ErrorInterceptor(self._on_dead)]
        if tokens is not None and tokens.enabled:
            interceptors.insert(0, AuthInterceptor(tokens))
        self.server = aio.server(
            interceptors=interceptors,
            options=[("grpc.so_reuseport", 0), *channel_options(cfg.max_message_bytes)],
        )
        for add in register:
            add(self.server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        if cfg.reflection:
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
            )
        self.port = add_port(self.server, cfg.listen, cfg.tls)
        if self.port == 0:
            raise OSError(f"could not bind gRPC server to {cfg.listen}")

    async def start(self) -> None:
        await self.server.start()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting calls, let in-flight ones run for up to grace_s."""
        if self._not_serving is not None:
            await self._not_serving
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.cfg.grace_s if grace_s is None else grace_s)

    def _on_dead(self, err: BackendDead) -> None:
        if self.dead.done():
            return
        log.error("backend dead: %s; draining", err)
        self.dead.set_result(err)
        self._not_serving = asyncio.ensure_future(self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING))

    async def _set_all(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)


async def wait_for_signal() -> signal.Signals:
    """Wait for SIGTERM or SIGINT; a second one exits the process at once."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if got.done():
            log.warning("second %s: exiting now", sig.name)
            os._exit(1)
        got.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await got
