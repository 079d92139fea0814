"""The Link's site handshake: which camera site a Link.Transmit call comes from, sent as call metadata."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from semcom.errors import InvalidInput
from semcom.ids import check_site_id

# gRPC metadata keys are lower case; channel-sim passes this one on to rxd unchanged.
SITE_METADATA_KEY = "semcom-site-id"


class InvalidSiteHandshake(InvalidInput):
    """The site a link or backhaul announced is given twice or as binary metadata."""


def site_metadata(site_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata txd opens Link.Transmit with; none for a site with no id (a single-site deployment)."""
    return ((SITE_METADATA_KEY, check_site_id(site_id)),) if site_id else ()


def site_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The site id a call announced ("" when none); InvalidInput for a malformed id or one given twice."""
    found = [value for key, value in metadata or () if key == SITE_METADATA_KEY]
    if not found:
        return ""
    if len(found) > 1:
        raise InvalidSiteHandshake(f"{SITE_METADATA_KEY} given {len(found)} times; give it once")
    value = found[0]
    if isinstance(value, bytes):
        raise InvalidSiteHandshake(f"{SITE_METADATA_KEY} must be text, not binary metadata")
    return check_site_id(value)


def check_burst_site(handshake_site: str, burst_site: str) -> str | None:
    """Why a burst's header.site_id cannot be taken on a call that announced `handshake_site` (None: it can).

    A call that announced no site takes bursts of any one site (older transmitters); one that did takes only
    bursts naming that site, so a connection never speaks for two sites."""
    if handshake_site and burst_site != handshake_site:
        return f"burst names site {burst_site[:64]!r}, but this link was opened by site {handshake_site!r}"
    return None


def backhaul_proof(key: bytes, site_id: str, challenge: bytes) -> bytes:
    """What a txd holding the site key answers rxd's backhaul challenge with: HMAC-SHA256 under a key derived
    for this purpose alone (never the frame key itself), over the challenge and the site id."""
    derived = hmac.new(key, b"semcom backhaul v1", hashlib.sha256).digest()
    return hmac.new(derived, challenge + site_id.encode(), hashlib.sha256).digest()
