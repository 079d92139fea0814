"""Builds, runs and drains the channel simulator."""

from __future__ import annotations

import logging

from channel_sim.admin import ChannelAdminService
from channel_sim.config import ChannelSimConfig
from channel_sim.proxy import BackhaulProxy, ChannelState, LinkProxy
from semcom.pb.v1 import channel_pb2, channel_pb2_grpc, link_pb2, link_pb2_grpc, sites_pb2, sites_pb2_grpc
from semcom.server import GrpcServer, channel_options
from semcom.telemetry import MetricsEndpoint, start_metrics
from semcom.tls import open_channel

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    link_pb2.DESCRIPTOR.services_by_name["Link"].full_name,
    channel_pb2.DESCRIPTOR.services_by_name["ChannelAdmin"].full_name,
    sites_pb2.DESCRIPTOR.services_by_name["Backhaul"].full_name,
]


class ChannelSim:
    """The proxy: a Link server whose bursts go through the channel chain to one upstream Link server."""

    def __init__(self, cfg: ChannelSimConfig) -> None:
        self.cfg = cfg
        self.state = ChannelState(cfg.channel)
        self.upstream = open_channel(
            cfg.upstream.address, cfg.upstream.tls, options=channel_options(cfg.server.max_message_bytes)
        )
        self.proxy = LinkProxy(self.state, link_pb2_grpc.LinkStub(self.upstream), cfg.upstream.address)
        self.backhaul = BackhaulProxy(
            self.state, sites_pb2_grpc.BackhaulStub(self.upstream), cfg.upstream.address
        )
        self.admin = ChannelAdminService(self.state)
        self.grpc = GrpcServer(
            cfg.server,
            [
                lambda s: link_pb2_grpc.add_LinkServicer_to_server(self.proxy, s),
                lambda s: channel_pb2_grpc.add_ChannelAdminServicer_to_server(self.admin, s),
                lambda s: sites_pb2_grpc.add_BackhaulServicer_to_server(self.backhaul, s),
            ],
            SERVICE_NAMES,
            auth=cfg.auth,
        )
        self.metrics: MetricsEndpoint | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        self.metrics = start_metrics(self.cfg.metrics)
        await self.grpc.start()
        log.info(
            "channel-sim serving on port %d -> %s, chain %s",
            self.port,
            self.cfg.upstream.address,
            self.state.chain.describe(),
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then close in order: the Link and admin services, the channel models, the upstream
        channel, the metrics endpoint."""
        await self.grpc.stop(grace_s)
        await self.state.aclose()
        await self.upstream.close(None)
        if self.metrics is not None:
            self.metrics.close()
        log.info("channel-sim stopped after %d bursts", self.state.stats.bursts_forwarded)
