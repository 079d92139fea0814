"""Builds, runs and drains the transmitter daemon."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from semcom.codec.seal import read_key
from semcom.pb.v1 import transmitter_pb2, transmitter_pb2_grpc
from semcom.schema import SchemaRegistry
from semcom.server import GrpcServer
from semcom.telemetry import MetricsEndpoint, start_metrics
from txd.backhaul import BackhaulClient
from txd.clips import ClipStore
from txd.config import TxdConfig
from txd.core import TransmitterCore
from txd.link import LinkSender
from txd.service import TransmitterService, transmitter_status
from txd.sources import SourcePool
from txd.understanding.base import UNDERSTANDERS, Understander

log = logging.getLogger(__name__)

SERVICE_NAME = transmitter_pb2.DESCRIPTOR.services_by_name["Transmitter"].full_name


class Txd:
    """The transmitter: the core with its link sender, models and executor, the gRPC service and the pulled
    sources on top of it, started and stopped in order."""

    def __init__(
        self, cfg: TxdConfig, schemas: SchemaRegistry | None = None, understander: Understander | None = None
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas or SchemaRegistry.builtin()
        self.schemas.get(cfg.site.schema_id)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="txd")
        self.link = LinkSender(
            cfg.link,
            self.schemas,
            schema_id=cfg.site.schema_id,
            max_message_bytes=cfg.server.max_message_bytes,
            state_dir=cfg.clips.dir / ".state",
        )
        self.clips = ClipStore(cfg.clips)
        understander = understander or UNDERSTANDERS.load(cfg.understanding.kind)(cfg.understanding)
        self.core = TransmitterCore(cfg, self.link, self.schemas, self.clips, self.executor, understander)
        self.service = TransmitterService(self.core)
        self.grpc = GrpcServer(
            cfg.server,
            [lambda s: transmitter_pb2_grpc.add_TransmitterServicer_to_server(self.service, s)],
            [SERVICE_NAME],
            auth=cfg.auth,
        )
        self.sources = SourcePool(cfg.sources, self.core, self.clips)
        self.backhaul = (
            BackhaulClient(
                self.core,
                self.link.channel,
                cfg.link.site_id,
                lambda: transmitter_status(self.core),
                key=read_key(cfg.link.key_file) if cfg.link.key_file is not None else None,
                reconnect_s=cfg.link.reconnect_s,
                reconnect_max_s=cfg.link.reconnect_max_s,
            )
            if cfg.link.site_id and cfg.link.backhaul
            else None
        )
        self._backhaul_task: asyncio.Task[None] | None = None
        self.metrics: MetricsEndpoint | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._sources_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        self.metrics = start_metrics(self.cfg.metrics)
        self._link_task = asyncio.create_task(self.link.run(), name="txd-link")
        if self.backhaul is not None:
            self._backhaul_task = asyncio.create_task(self.backhaul.run(), name="txd-backhaul")
        await self.grpc.start()
        log.info("txd serving on port %d, link to %s (%s)", self.port, self.cfg.link.upstream, self.link.mcs)
        # Sources start once the server is up: a slow or failing one never delays or blocks Ingest.
        self._sources_task = asyncio.create_task(self.sources.run(), name="txd-sources")

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then close in order: stop taking calls and let in-flight ones finish; stop pulling sources
        (their open clip segments are stored); deliver what was accepted; close the link and the backhaul;
        close the models (understander, detector, appearance embedder); stop the executor; close the metrics
        endpoint."""
        await self.grpc.stop(grace_s)
        if self._sources_task is not None:
            self._sources_task.cancel()
            await asyncio.gather(self._sources_task, return_exceptions=True)
        if not await self.link.flush(self.cfg.link.flush_timeout_s):
            log.error("shutdown: %d records still unacknowledged", self.link.stats.records_queued)
        for task in (self._link_task, self._backhaul_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.link.close()
        await self.core.aclose()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.close()
        log.info(
            "txd stopped: %d records acked, %d lost",
            self.link.stats.records_acked,
            self.link.stats.records_lost,
        )
