"""Outgoing HTTP to addresses clinics choose (webhooks): public addresses only, by default.

A clinic admin sets the URL a webhook is posted to. Without a check, that URL could name the
broker's own network: ``http://127.0.0.1:6379`` (its Redis), ``http://169.254.169.254`` (a
cloud's metadata service), a database on ``10.0.0.5``. So unless the operator allows private
targets (``--webhook-private-targets``, for an on-premises clinic system or for tests):

* a URL whose host is an IP address must name a public one (checked when it is registered,
  and again before each delivery);
* a host name is resolved at delivery by ``PublicResolver``, which keeps only the public
  addresses it resolves to and connects to one of those, so a name that resolves to a private
  address (or is re-pointed there later: DNS rebinding) is never reached.

"Public" is what ``ipaddress`` calls global: not loopback, private, link-local, shared
(100.64/10), reserved, documentation or multicast space; an IPv4-mapped IPv6 address is judged
by its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["NotPublic", "PublicResolver", "is_public", "literal_not_public"]


class NotPublic(OSError):
    """The target resolves to no public address (a connection error, like a DNS failure)."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP address as text) is a public, unicast one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal_not_public(url: str) -> bool:
    """Whether ``url``'s host is an IP address that is not public (a name is judged later)."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name: PublicResolver decides at delivery
    return not is_public(host)


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (``NotPublic`` when none is left)."""

    def __init__(self, base: AbstractResolver | None = None) -> None:
        self._base = base if base is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._base.resolve(host, port, family=family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise NotPublic(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._base.close()
