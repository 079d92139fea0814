#!/usr/bin/env python3
"""gRPC health probe for the semcom daemons (grpc_health_probe's job): exit 0 only when SERVING."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS with the CA (and, for mTLS, the client certificate) the flags name."""
    if args.ca is None:
        return grpc.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.address, credentials, options=options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="semcom-health",
        description="Ask a daemon's gRPC health service; exit 0 when it answers SERVING, 1 otherwise "
        "(NOT_SERVING while it drains, or no answer). Container health checks run it.",
    )
    parser.add_argument("address", help="host:port of the daemon's gRPC server, e.g. 127.0.0.1:50053")
    parser.add_argument("--service", default="", help="service name to ask about; empty: the whole server")
    parser.add_argument("--timeout-s", type=float, default=3.0, help="deadline of the check")
    tls = parser.add_argument_group("TLS, for a daemon whose server.tls has a certificate")
    tls.add_argument("--ca", type=Path, help="PEM CA the daemon's certificate chains to (turns TLS on)")
    tls.add_argument("--cert", type=Path, help="PEM client certificate, for a daemon that requires mTLS")
    tls.add_argument("--key", type=Path, help="PEM private key of --cert")
    tls.add_argument("--server-name", default="", help="name expected in the daemon's certificate")
    args = parser.parse_args(argv)
    try:
        with _channel(args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
    except OSError as err:
        print(f"{args.address}: cannot read a TLS file: {err}", file=sys.stderr)
        return 1
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
