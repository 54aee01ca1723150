"""Signed webhooks for clinic systems, delivered from a durable outbox.

- ``signing``: ``sign`` / ``verify``, the Standard Webhooks scheme. Headers ``webhook-id``
  (the event id, stable across retries), ``webhook-timestamp`` (seconds) and
  ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``); secrets
  are ``whsec_<base64>``.
- ``outbox``: ``Outbox``, the scheduling ``EventSink``: one event -> one ``Delivery`` per
  subscribed endpoint of the event's clinic, appended to the store's outbox.
- ``worker``: ``WebhookWorker``, a background task on every node; only the holder of the
  ``webhooks`` lease sends. The store hands out only the head of each (endpoint, session) line,
  so events of one session reach an endpoint in order; failures retry with capped exponential
  backoff.
- ``endpoints``: ``Webhooks``, the service behind the REST routes (a clinic's admins and its
  API keys), and which URLs may be targets.
- ``events``: the event types, the payload, and which event data may leave the broker.

Logs carry ids and status codes only, never a body, a URL or a secret.
"""

from broker.webhooks.endpoints import (
    MAX_ENDPOINTS_PER_CLINIC,
    MAX_URL_LENGTH,
    DeliveryStatus,
    Webhooks,
    can_manage_webhooks,
    check_event_types,
    delivery_status,
    url_problem,
)
from broker.webhooks.events import (
    EVENT_TYPES,
    PARTICIPANT_ADMITTED,
    PARTICIPANT_JOINED,
    PARTICIPANT_LEFT,
    SESSION_CANCELLED,
    SESSION_CREATED,
    SESSION_ENDED,
    SESSION_NOSHOW,
    SESSION_STARTED,
    SESSION_STARTING_SOON,
    SESSION_UPDATED,
    payload,
    safe_data,
    subscribed,
)
from broker.webhooks.outbox import Outbox
from broker.webhooks.signing import new_secret, sign, signed_headers, verify
from broker.webhooks.worker import (
    NOT_PUBLIC,
    POLL_ALONE,
    POLL_SHARED,
    WebhookWorker,
    retry_delay,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_ENDPOINTS_PER_CLINIC",
    "MAX_URL_LENGTH",
    "NOT_PUBLIC",
    "PARTICIPANT_ADMITTED",
    "PARTICIPANT_JOINED",
    "PARTICIPANT_LEFT",
    "POLL_ALONE",
    "POLL_SHARED",
    "SESSION_CANCELLED",
    "SESSION_CREATED",
    "SESSION_ENDED",
    "SESSION_NOSHOW",
    "SESSION_STARTED",
    "SESSION_STARTING_SOON",
    "SESSION_UPDATED",
    "DeliveryStatus",
    "Outbox",
    "WebhookWorker",
    "Webhooks",
    "can_manage_webhooks",
    "check_event_types",
    "delivery_status",
    "new_secret",
    "payload",
    "retry_delay",
    "safe_data",
    "sign",
    "signed_headers",
    "subscribed",
    "url_problem",
    "verify",
]
