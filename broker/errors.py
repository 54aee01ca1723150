"""The broker's one exception tree.

Wire codes are constants; HTTP statuses live in the web layer.
"""

from __future__ import annotations

from typing import Any


class BrokerError(Exception):
    """Root of every error the broker raises on purpose. ``code`` is stable and documented."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidInput(BrokerError):
    code = "invalid_input"


class NotFound(BrokerError):
    code = "not_found"


class Conflict(BrokerError):
    code = "conflict"


class AuthenticationFailed(BrokerError):
    """The caller could not be identified (missing, wrong or expired credentials)."""

    code = "unauthenticated"


class InvalidToken(AuthenticationFailed):
    code = "invalid_token"


class PermissionDenied(BrokerError):
    code = "forbidden"


class Throttled(BrokerError):
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class DeviceFlowError(BrokerError):
    """RFC 8628 token endpoint errors; ``code`` is the RFC's ``error`` value."""

    code = "invalid_grant"


class StoreError(BrokerError):
    code = "store_unavailable"


# Stable codes that are not a class of their own.
INVALID_CREDENTIALS = "invalid_credentials"
EMAIL_TAKEN = "email_taken"
TOKEN_REUSED = "refresh_token_reused"
AUTHORIZATION_PENDING = "authorization_pending"
SLOW_DOWN = "slow_down"
EXPIRED_TOKEN = "expired_token"
ACCESS_DENIED = "access_denied"
