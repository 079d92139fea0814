"""Builds, runs and drains the receiver daemon."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rxd.backhaul import Backhaul, BackhaulService, SitesService
from rxd.config import EmbedderConfig, GenerateConfig, QueryParserConfig, RxdConfig, TemplateConfig
from rxd.core import ReceiverCore
from rxd.http import HttpApi
from rxd.http_guard import HttpGuard
from rxd.receiver import BurstReceiver, learned_models, site_keys
from rxd.retrieval.describe import DESCRIBERS, Describer, DescriberBackend, FallbackDescriber
from rxd.retrieval.embed import EMBEDDERS, EmbedderBackend, TextEncoder
from rxd.retrieval.engine import RetrievalEngine
from rxd.retrieval.index import describe_index, open_index
from rxd.retrieval.parse import QUERY_PARSERS, QueryParser, parse_query
from rxd.service import LinkService, ReceiverService
from rxd.site_store import open_site_store
from rxd.sites import SiteBook
from semcom.auth import TokenSet, bearer_interceptors, client_token
from semcom.pb.v1 import (
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    sites_pb2,
    sites_pb2_grpc,
    transmitter_pb2_grpc,
)
from semcom.registry import Registry
from semcom.schema import SchemaRegistry
from semcom.server import GrpcServer, channel_options
from semcom.telemetry import MetricsEndpoint, start_metrics
from semcom.tls import open_channel

log = logging.getLogger(__name__)


def build_describer(
    cfg: GenerateConfig, registry: Registry[Callable[[Any], DescriberBackend]] = DESCRIBERS
) -> DescriberBackend:
    """The generating backend `cfg.kind` names; a model-backed one falls back to the template per record."""
    describer = registry.load(cfg.kind)(cfg)
    return describer if isinstance(cfg, TemplateConfig) else FallbackDescriber(describer)


def build_embedder(
    cfg: EmbedderConfig, registry: Registry[Callable[[Any], EmbedderBackend]] = EMBEDDERS
) -> EmbedderBackend:
    return registry.load(cfg.kind)(cfg)


def build_query_parser(
    cfg: QueryParserConfig, registry: Registry[Callable[[Any], QueryParser]] = QUERY_PARSERS
) -> QueryParser:
    """The parser `cfg.kind` names; a model-backed one falls back to the embedded parser on its own."""
    return registry.load(cfg.kind)(cfg)


T = TypeVar("T")


def _built(backend: T | None) -> T:
    """A backend `Rxd` built because none was given (so it is there)."""
    assert backend is not None
    return backend


SERVICE_NAMES = [
    link_pb2.DESCRIPTOR.services_by_name["Link"].full_name,
    receiver_pb2.DESCRIPTOR.services_by_name["Receiver"].full_name,
    sites_pb2.DESCRIPTOR.services_by_name["Backhaul"].full_name,
    sites_pb2.DESCRIPTOR.services_by_name["Sites"].full_name,
]
SITES_FLUSH_S = 1.0  # how often the sites' counters are written to the index (and at stop)


class Rxd:
    """The receiver: Link + Receiver services and the HTTP API over one retrieval engine."""

    def __init__(
        self,
        cfg: RxdConfig,
        schemas: SchemaRegistry | None = None,
        *,
        describer: Describer | None = None,
        embedder: TextEncoder | None = None,
        query_parser: QueryParser | None = None,
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas or SchemaRegistry.builtin()
        self.schemas.get(cfg.task.schema_id)
        self.store = open_index(cfg.index, self.schemas)
        # Backends built here from the config are this daemon's to close; injected ones are the caller's.
        self._parser = build_query_parser(cfg.query.parser) if query_parser is None else None
        self._describer = build_describer(cfg.generate) if describer is None else None
        self._embedder = build_embedder(cfg.embedder) if embedder is None else None
        self.engine = RetrievalEngine(
            self.schemas,
            self.store,
            describer or _built(self._describer),
            embedder or _built(self._embedder),
            parser=query_parser or _built(self._parser),
            max_top_k=cfg.query.max_top_k,
        )
        # One worker: bursts are decoded and indexed in arrival order; the embedder runs one batch at a time.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rxd-model")
        # Queries have threads of their own, so that indexing never waits behind a slow or heavy query.
        self.query_executor = ThreadPoolExecutor(
            max_workers=cfg.query.workers, thread_name_prefix="rxd-query"
        )
        self.receiver = BurstReceiver(
            self.schemas,
            self.engine,
            self.executor,
            ldpc_iterations=cfg.link.ldpc_iterations,
            keys=site_keys(cfg.link.site_keys),
            min_tag_bytes=cfg.link.min_tag_bits // 8,
            learned=learned_models(cfg.link.learned_models, self.schemas),
        )
        # Sites and their counters live in the index database, so they survive a restart.
        self.sites = SiteBook(open_site_store(cfg.index))
        self.sites.follow_streams(self.receiver.streams)  # the link's per-stream counts, kept there too
        self.backhaul = Backhaul(self.sites)
        # transmitter.address: a fallback for streams of sites with no backhaul open (none when empty).
        self.tx_channel = (
            open_channel(
                cfg.transmitter.address,
                cfg.transmitter.tls,
                options=channel_options(cfg.server.max_message_bytes),
                interceptors=bearer_interceptors(client_token(cfg.transmitter.auth)),
            )
            if cfg.transmitter.address
            else None
        )
        self.core = ReceiverCore(
            cfg,
            self.engine,
            self.receiver,
            self.query_executor,
            transmitter_pb2_grpc.TransmitterStub(self.tx_channel) if self.tx_channel is not None else None,
            self.backhaul,
        )
        self.link_service = LinkService(self.receiver, cfg.task.schema_id, self.sites)
        self.receiver_service = ReceiverService(self.core)
        self.grpc = GrpcServer(
            cfg.server,
            [
                lambda s: link_pb2_grpc.add_LinkServicer_to_server(self.link_service, s),
                lambda s: receiver_pb2_grpc.add_ReceiverServicer_to_server(self.receiver_service, s),
                lambda s: sites_pb2_grpc.add_BackhaulServicer_to_server(
                    BackhaulService(self.backhaul, self.receiver.keys), s
                ),
                lambda s: sites_pb2_grpc.add_SitesServicer_to_server(SitesService(self.sites), s),
            ],
            SERVICE_NAMES,
            auth=cfg.auth,
        )
        guard = HttpGuard(cfg.http, TokenSet.from_config(cfg.auth))
        self.http = HttpApi(self.core, cfg.http.listen, guard=guard) if cfg.http.enabled else None
        self.metrics: MetricsEndpoint | None = None
        self._flush: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        # Load the models before serving, so health turns SERVING only when the first burst can be indexed,
        # and build the query vocabulary (colour table, lexicon) so that the first query is not slow.
        await asyncio.get_running_loop().run_in_executor(self.executor, self._warm_up)
        self.metrics = start_metrics(self.cfg.metrics)
        self._flush = asyncio.create_task(self._flush_sites(), name="rxd-sites")
        await self.grpc.start()
        web = ""
        if self.http is not None:
            scheme = "https" if self.cfg.http.tls.enabled else "http"
            host = self.cfg.http.listen.rsplit(":", 1)[0]
            web = f", web page on {scheme}://{host}:{await self.http.start()}/"
        log.info(
            "rxd serving on port %d%s, index %s (%d records)",
            self.port,
            web,
            describe_index(self.cfg.index),
            self.engine.count(),
        )

    async def _flush_sites(self) -> None:
        while True:
            await asyncio.sleep(SITES_FLUSH_S)
            try:
                self.sites.take_streams()
                await asyncio.to_thread(self.sites.flush)
            except Exception as err:  # kept for the next try: the counts are never lost to one failure
                log.warning("writing the sites' counters failed: %s", err)

    def _warm_up(self) -> None:
        self.engine.embedder.encode(["warm-up"])
        parse_query("", self.schemas.get(self.cfg.task.schema_id))

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then close in this order: gRPC (in-flight calls finish), HTTP, the query threads (queries
        still waiting are dropped), the model worker (queued bursts are decoded and committed), the backends
        this daemon built (query parser, describer, embedder: nothing uses them any more), the transmitter
        channel, the index, the sites' counters (written last), metrics.
        """
        await self.grpc.stop(grace_s)
        if self._flush is not None:
            self._flush.cancel()
            await asyncio.gather(self._flush, return_exceptions=True)
        if self.http is not None:
            await self.http.stop()
        await asyncio.to_thread(self.query_executor.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.executor.shutdown, wait=True)
        for backend in (self._parser, self._describer, self._embedder):
            if backend is not None:
                await backend.aclose()
        if self.tx_channel is not None:
            await self.tx_channel.close(None)
        self.store.close()
        try:  # after the records: a write lock the index left open is released by now
            self.sites.take_streams()
            await asyncio.to_thread(self.sites.close)
        except Exception as err:
            log.error("the sites' last counts were not written: %s", err)
        if self.metrics is not None:
            self.metrics.close()
        log.info("rxd stopped")
