"""ICE servers for clients: STUN, and TURN with TURN REST API credentials.

coturn's ``use-auth-secret`` scheme: username ``"<unix-expiry>:<id>"``, password
``base64(HMAC-SHA1(secret, username))``. Short-lived, so a leaked one soon stops working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from broker.config import Settings


def turn_credentials(secret: str, user: str, now: datetime, ttl: int) -> tuple[str, str]:
    username = f"{int(now.timestamp()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(settings: Settings, user: str, now: datetime) -> list[dict[str, Any]]:
    """The RTCIceServer list for one peer (browser field names)."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secret:
        username, credential = turn_credentials(settings.turn_secret, user, now, settings.turn_ttl)
        servers.append(
            {"urls": list(settings.turn_urls), "username": username, "credential": credential}
        )
    return servers
