"""``RedisStore``: the ``Store`` protocol on Redis, for many broker nodes sharing state.

The store is composed of one mixin per concern; each module documents the keys it owns:

- ``redis_base``: the client, key naming (prefix ``cc``, one hash tag ``{...}`` per key so that
  every Lua script touches one Redis Cluster slot), codecs, compare-and-set and optimistic
  transactions;
- ``redis_accounts``: clinics and users, with the unique e-mail index;
- ``redis_credentials``: refresh tokens, API keys, device grants, signing keys, login failures;
- ``redis_schedule``: sessions (``{sched}``), availability, sites, the audit trail;
- ``redis_access``: invites, calendar feed tokens, trusted contacts;
- ``redis_outbox``: webhook endpoints and the outbox of their deliveries (``{outbox}``);
- ``redis_coordination``: leases and once marks between nodes.

Connection failures surface as ``StoreUnavailable`` (``redis_errors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from broker.store.redis_access import RedisAccessMixin
from broker.store.redis_accounts import RedisAccountsMixin
from broker.store.redis_coordination import RedisCoordinationMixin
from broker.store.redis_credentials import RedisCredentialsMixin
from broker.store.redis_errors import translated
from broker.store.redis_outbox import RedisOutboxMixin
from broker.store.redis_schedule import RedisScheduleMixin

if TYPE_CHECKING:
    from broker.store.base import Store

__all__ = ["RedisStore"]

RECONNECT_TRIES = 3  # a command on a connection Redis closed is sent again this often


class RedisStore(
    RedisAccountsMixin,
    RedisCredentialsMixin,
    RedisScheduleMixin,
    RedisAccessMixin,
    RedisOutboxMixin,
    RedisCoordinationMixin,
):
    """Accounts, credentials and the schedule in Redis. The store owns its client: ``close``
    closes it."""

    @classmethod
    async def connect(cls, url: str, prefix: str = "cc") -> RedisStore:
        """Open a client on ``url`` and check that the server answers."""
        store = cls(
            aredis.Redis.from_url(
                url,
                decode_responses=True,
                # A pooled connection that Redis closed (a restart, a failover) fails its next
                # command; it is reconnected and the command sent again, a few times, quickly.
                retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), RECONNECT_TRIES),
                retry_on_error=[redis.exceptions.ConnectionError],
            ),
            prefix,
        )
        try:
            await store.ping()
        except BaseException:
            await store.close()
            raise
        return store

    @translated
    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()


if TYPE_CHECKING:

    def _conforms(store: RedisStore) -> Store:  # mypy checks the protocol here
        return store
