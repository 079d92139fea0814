#!/usr/bin/env python3
"""gRPC health probe for the semcom daemons (grpc_health_probe's job): exit 0 only when SERVING."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="semcom-health",
        description="Ask a daemon's gRPC health service; exit 0 when it answers SERVING, 1 otherwise "
        "(NOT_SERVING while it drains, or no answer). Container health checks run it.",
    )
    parser.add_argument("address", help="host:port of the daemon's gRPC server, e.g. 127.0.0.1:50053")
    parser.add_argument("--service", default="", help="service name to ask about; empty: the whole server")
    parser.add_argument("--timeout-s", type=float, default=3.0, help="deadline of the check")
    args = parser.parse_args(argv)
    try:
        with grpc.insecure_channel(args.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        print(f"{args.address}: {code.name if code else 'ERROR'}: {details}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
