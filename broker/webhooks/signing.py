"""Signatures of the Standard Webhooks scheme (``whsec_`` secrets, ``v1,`` HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes; the HMAC key is the decoded bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | datetime,
    tolerance: int = 300,
) -> bool:
    """True when one of the (space-separated) ``v1`` signatures matches and the timestamp is
    within ``tolerance`` seconds of ``now`` (either way). Header names are case-insensitive."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp", "")
    given = lower.get("webhook-signature")
    if not msg_id or given is None or not stamp.isdigit():
        return False
    now_s = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_s - int(stamp)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    return any(hmac.compare_digest(expected, sig.encode()) for sig in given.split())
