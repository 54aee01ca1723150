"""Which addresses count as public for outgoing webhooks (broker/egress.py)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from broker.egress import NotPublic, PublicResolver, is_public, literal_not_public


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("192.0.2.7", False),  # documentation
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd12:3456::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_only_literal_addresses_are_judged_before_resolving() -> None:
    assert literal_not_public("http://127.0.0.1/x")
    assert literal_not_public("https://[::1]:8443/x")
    assert not literal_not_public("https://93.184.215.14/x")
    assert not literal_not_public("https://clinic.example.org/x")  # judged when resolved


class Answers(AbstractResolver):
    """Stands in for DNS of names outside this machine."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [_result(host, a, port) for a in self.addresses]

    async def close(self) -> None:
        return None


def _result(host: str, address: str, port: int) -> Any:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": 0,
    }


async def test_a_name_keeps_only_its_public_addresses() -> None:
    mixed = PublicResolver(Answers("10.0.0.5", "93.184.215.14"))
    assert [r["host"] for r in await mixed.resolve("clinic.example.org", 443)] == ["93.184.215.14"]
    with pytest.raises(NotPublic):
        await PublicResolver(Answers("169.254.169.254")).resolve("metadata.example", 80)


async def test_a_name_of_this_machine_is_refused() -> None:
    resolver = PublicResolver()  # the real resolver
    try:
        with pytest.raises(NotPublic):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
