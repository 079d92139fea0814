"""The project's error hierarchy; each class maps to one gRPC status code at the service edge."""

from __future__ import annotations

import grpc


class SemcomError(Exception):
    """Base of every error the project raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(SemcomError):
    """The caller sent something malformed: a bad payload, an unknown schema, unreadable video."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SemcomError):
    """The named record, stream or clip does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Overloaded(SemcomError):
    """A bounded queue is full; the caller should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendFailed(SemcomError):
    """A backend failed for this request only."""

    code = grpc.StatusCode.INTERNAL


class BackendDead(SemcomError):
    """A backend is gone; the daemon drains."""

    code = grpc.StatusCode.UNAVAILABLE


class PeerUnavailable(SemcomError):
    """Another daemon this request needs cannot be reached (rxd's transmitter for a clip); the caller may
    retry later, and this daemon keeps serving: unlike BackendDead, it does not drain."""

    code = grpc.StatusCode.UNAVAILABLE


class NotImplementedYet(SemcomError):
    """A capability this build does not provide."""

    code = grpc.StatusCode.UNIMPLEMENTED


class DecodeError(InvalidInput):
    """A frame or burst could not be decoded (truncated, wrong version, CRC mismatch)."""


class CrcError(DecodeError):
    """A frame decoded to the right length but its CRC did not match."""


class TimedOut(SemcomError):
    """A request ran past its time budget (a query over query.timeout_s); the caller may retry."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(SemcomError):
    """The caller could not show who it is: a site without a key here, or a proof under the wrong key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class SiteNotConnected(PeerUnavailable):
    """The camera site a fetch must go to has no backhaul open to this receiver (its txd is down, cut off or
    runs without link.site_id), and no transmitter.address is configured to reach it otherwise."""
