"""Builds, runs and drains the receiver daemon."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from grpc import aio

from rxd.config import RxdConfig
from rxd.index import RecordIndex, SqliteIndex
from rxd.receiver import BurstReceiver
from rxd.service import LinkService, ReceiverService
from semcom.pb.v1 import link_pb2, link_pb2_grpc, receiver_pb2, receiver_pb2_grpc, transmitter_pb2_grpc
from semcom.schema import SchemaRegistry
from semcom.server import GrpcServer, channel_options
from semcom.telemetry import MetricsEndpoint, start_metrics

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    link_pb2.DESCRIPTOR.services_by_name["Link"].full_name,
    receiver_pb2.DESCRIPTOR.services_by_name["Receiver"].full_name,
]


class Rxd:
    """The receiver: Link + Receiver services over one index, started and stopped in order."""

    def __init__(
        self, cfg: RxdConfig, schemas: SchemaRegistry | None = None, index: RecordIndex | None = None
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas or SchemaRegistry.builtin()
        self.schemas.get(cfg.task.schema_id)
        self.index = index if index is not None else SqliteIndex(cfg.index.path)
        # One worker: bursts of a stream are decoded and indexed in arrival order.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rxd-decode")
        self.receiver = BurstReceiver(
            self.schemas, self.index, self.executor, ldpc_iterations=cfg.link.ldpc_iterations
        )
        self.tx_channel = aio.insecure_channel(
            cfg.transmitter.address, options=channel_options(cfg.server.max_message_bytes)
        )
        self.link_service = LinkService(self.receiver, cfg.task.schema_id)
        self.receiver_service = ReceiverService(
            cfg,
            self.schemas,
            self.index,
            self.receiver,
            transmitter_pb2_grpc.TransmitterStub(self.tx_channel),
        )
        self.grpc = GrpcServer(
            cfg.server,
            [
                lambda s: link_pb2_grpc.add_LinkServicer_to_server(self.link_service, s),
                lambda s: receiver_pb2_grpc.add_ReceiverServicer_to_server(self.receiver_service, s),
            ],
            SERVICE_NAMES,
        )
        self.metrics: MetricsEndpoint | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        self.metrics = start_metrics(self.cfg.metrics)
        await self.grpc.start()
        log.info(
            "rxd serving on port %d, index %s (%d records)",
            self.port,
            self.cfg.index.path,
            self.index.count(),
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain: in-flight bursts are decoded and committed before the index closes."""
        await self.grpc.stop(grace_s)
        self.executor.shutdown(wait=True)
        await self.tx_channel.close(None)
        self.index.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("rxd stopped")
