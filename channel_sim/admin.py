"""ChannelAdmin: read and replace the channel chain at run time, read the channel's counters."""

from __future__ import annotations

import json

from grpc import aio

from channel_sim.models import ChannelChain
from channel_sim.proxy import ChannelState
from semcom.errors import InvalidInput
from semcom.pb.v1 import channel_pb2, channel_pb2_grpc

Context = aio.ServicerContext[object, object]


def chain_to_pb(chain: ChannelChain) -> channel_pb2.ChannelChain:
    specs = []
    for item in chain.to_dicts():
        params = {k: v for k, v in item.items() if k != "kind"}
        specs.append(channel_pb2.ChannelModelSpec(kind=str(item["kind"]), params_json=json.dumps(params)))
    return channel_pb2.ChannelChain(models=specs, seed=chain.seed)


def chain_from_pb(msg: channel_pb2.ChannelChain) -> ChannelChain:
    items: list[dict[str, object]] = []
    for i, spec in enumerate(msg.models):
        try:
            params = json.loads(spec.params_json) if spec.params_json else {}
        except json.JSONDecodeError as err:
            raise InvalidInput(f"models[{i}].params_json is not JSON: {err}") from err
        if not isinstance(params, dict):
            raise InvalidInput(f"models[{i}].params_json must be a JSON object")
        items.append({"kind": spec.kind, **params})
    return ChannelChain.from_dicts(items, seed=msg.seed)


class ChannelAdminService(channel_pb2_grpc.ChannelAdminServicer):
    def __init__(self, state: ChannelState) -> None:
        self.state = state

    async def GetChain(
        self, request: channel_pb2.GetChainRequest, context: Context
    ) -> channel_pb2.ChannelChain:
        return chain_to_pb(self.state.chain)

    async def SetChain(self, request: channel_pb2.ChannelChain, context: Context) -> channel_pb2.ChannelChain:
        self.state.replace(chain_from_pb(request))
        return chain_to_pb(self.state.chain)

    async def GetStats(
        self, request: channel_pb2.GetStatsRequest, context: Context
    ) -> channel_pb2.ChannelStats:
        s = self.state.stats
        return channel_pb2.ChannelStats(
            bursts_forwarded=s.bursts_forwarded,
            bursts_dropped=s.bursts_dropped,
            symbols_forwarded=s.symbols_forwarded,
            symbols_erased=s.symbols_erased,
            airtime_s=s.airtime_s,
            feedback_forwarded=s.feedback_forwarded,
            backhaul_bytes=s.backhaul_bytes,
            backhaul_requests=s.backhaul_requests,
        )
