"""What the bus's Redis client puts on the wire and reads back, apart from the connection:
argument types and packing (hiredis), scripts run by SHA1 and commands packed ahead of time,
error replies, and the Redis URL. Pure: no I/O (``signaling/bus/resp_connection.py`` does that)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import hiredis

from signaling.bus.base import BusUnavailable

__all__ = [
    "Address",
    "Arg",
    "Prepared",
    "RespError",
    "Script",
    "pack",
    "parse_url",
    "reply_error",
]

# Error replies that mean "Redis cannot serve now", not "this command is wrong".
UNAVAILABLE = (b"LOADING", b"BUSY", b"MASTERDOWN", b"TRYAGAIN", b"CLUSTERDOWN", b"OOM")

Arg = bytes | str | int | float

# hiredis's stub types the argument as a one-element tuple; it takes any number of them.
pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


class RespError(Exception):
    """Redis answered with an error reply (e.g. ``NOSCRIPT``, ``WRONGTYPE``)."""


def reply_error(error: hiredis.ReplyError) -> Exception:
    """The exception for an error reply: ``BusUnavailable`` for a server that cannot serve."""
    text = str(error)
    if text.encode().startswith(UNAVAILABLE):
        return BusUnavailable(f"redis cannot serve: {text.split(' ', 1)[0]}")
    return RespError(text)


@dataclass(frozen=True, slots=True)
class Address:
    host: str | None  # None for a unix socket
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None


def parse_url(url: str) -> Address:
    """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=N]``."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if parts.scheme == "redis":
        db_text = parts.path.strip("/") or query.get("db", "0")
        host = parts.hostname or "127.0.0.1"
        return Address(host, parts.port or 6379, None, int(db_text), username, password)
    if parts.scheme == "unix":
        return Address(None, 0, parts.path, int(query.get("db", "0")), username, password)
    raise ValueError("a redis URL starts with redis:// or unix://")


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, run by its SHA1 (``EVALSHA``), sent whole only when Redis lacks it."""

    source: bytes
    sha: bytes

    @classmethod
    def of(cls, source: str) -> Script:
        body = source.encode()
        return cls(body, hashlib.sha1(body, usedforsecurity=False).hexdigest().encode())


@dataclass(frozen=True, slots=True)
class Prepared:
    """A script's ``EVALSHA`` packed ahead of time but for its first argument:
    ``command(arg)`` is the whole command (one bytes format instead of packing every argument,
    for a command sent thousands of times a second with the same keys)."""

    script: Script
    head: bytes
    tail: bytes

    @classmethod
    def of(cls, script: Script, keys: Sequence[Arg], after: Sequence[Arg]) -> Prepared:
        before = (b"EVALSHA", script.sha, len(keys), *keys)
        head = b"*%d\r\n" % (len(before) + 1 + len(after))
        packed = [pack((arg,)).split(b"\r\n", 1)[1] for arg in (*before, *after)]
        return cls(script, head + b"".join(packed[: len(before)]), b"".join(packed[len(before) :]))

    def command(self, arg: bytes) -> bytes:
        return b"%b$%d\r\n%b\r\n%b" % (self.head, len(arg), arg, self.tail)
