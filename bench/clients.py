"""Clients for the benchmarks: broker accounts and calls over REST, sockets that have said
hello (and joined), and a load generator that measures one-way latency in one process.

Accounts: two family members register and log in once (Argon2 is slow by design); the host
books back-to-back one-minute family calls with the other, so one pair of users can have
hundreds of calls joinable at once (the brokers run with a 24 h join window). Every call gets
two join tokens over ``POST /api/v1/sessions/{id}/join``, as a real client would.

Latency: both ends of every pair live in this process. The sender writes a counter into the
message (the session version of the SDP ``o=`` line, or the candidate's foundation: both relays
forward those verbatim) and notes ``perf_counter_ns``; the receiver finds the counter in the
frame it gets and notes the time again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bench.common import DATA

PASSWORD = "bench-password-1"
WS_MAX = 4 * 1024 * 1024
# permessage-deflate window bits the client sockets offer (0: none). Browsers always offer it;
# aiohttp's client does not unless asked. ``bench.relay --compress`` sets it.
COMPRESS = 0


def sdp_template() -> str:
    """The aiortc offer with ``{n}`` as the session version of its ``o=`` line."""
    sdp = (DATA / "offer.sdp").read_bytes().decode()
    origin = sdp.split("\r\n")[1]  # o=- <id> <version> IN IP4 ...
    parts = origin.split(" ")
    parts[2] = "{n}"
    return sdp.replace(origin, " ".join(parts), 1)


CANDIDATE = (
    "candidate:{n} 1 udp 2122260223 192.168.1.23 54400 typ host generation 0 "
    "ufrag s4e8 network-id 1 network-cost 10"
)
COUNTERS = {
    "sdp": re.compile(r"o=- \d+ (\d+) IN"),
    "candidate": re.compile(r"candidate:(\d+) 1 udp"),
}


def message(kind: str, to: str, n: int | str) -> dict[str, Any]:
    """An ``offer`` (SDP-sized) or ``candidate`` as a browser would send it."""
    if kind == "sdp":
        return {"type": "offer", "to": to, "sdp": sdp_template().replace("{n}", str(n))}
    cand = CANDIDATE.replace("{n}", str(n))
    return {
        "type": "candidate",
        "to": to,
        "candidate": {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0},
    }


@dataclass(slots=True)
class Template:
    """A message pre-encoded around its counter: sending costs one string concatenation."""

    head: str
    tail: str

    @classmethod
    def of(cls, kind: str, to: str) -> Template:
        marker = "987654321987654321"
        text = json.dumps(message(kind, to, marker), separators=(",", ":"))
        head, tail = text.split(marker)
        return cls(head, tail)

    def frame(self, n: int) -> str:
        return self.head + str(n) + self.tail


# REST: accounts, calls, join tokens


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _json(resp: aiohttp.ClientResponse, want: int) -> Any:
    if resp.status != want:
        raise RuntimeError(f"{resp.method} {resp.url}: {resp.status} {await resp.text()}")
    return await resp.json()


async def family_user(http: aiohttp.ClientSession, base: str, email: str) -> User:
    body = {"email": email, "password": PASSWORD, "display_name": email.split("@")[0]}
    async with http.post(f"{base}/api/v1/auth/register", json={**body, "role": "family"}) as r:
        await _json(r, 201)
    login = {"email": email, "password": PASSWORD}
    async with http.post(f"{base}/api/v1/auth/login", json=login) as r:
        out = await _json(r, 200)
    return User(out["user"]["id"], email, out["access_token"])


@dataclass(frozen=True, slots=True)
class Call:
    session_id: str
    host_token: str
    guest_token: str


@dataclass
class Family:
    """Two family members of one broker (or one Redis-backed cluster) and their calls."""

    http: aiohttp.ClientSession
    base: str
    host: User
    guest: User
    next_start: datetime = field(default_factory=lambda: _minute(datetime.now(UTC)))

    @classmethod
    async def register(cls, http: aiohttp.ClientSession, base: str, tag: str = "") -> Family:
        stamp = f"{int(time.time() * 1000)}{tag}"
        host = await family_user(http, base, f"host-{stamp}@bench.test")
        guest = await family_user(http, base, f"guest-{stamp}@bench.test")
        return cls(http, base, host, guest)

    async def calls(self, count: int, concurrency: int = 4, base: str | None = None) -> list[Call]:
        """``count`` new one-minute calls, back to back, each with both join tokens. Join
        tokens come from ``base`` (another node of the cluster) when given."""
        starts = []
        for _ in range(count):
            self.next_start += timedelta(minutes=1)
            starts.append(self.next_start)
        if starts and starts[-1] > datetime.now(UTC) + timedelta(hours=23):
            raise ValueError("more calls than fit in the 24 h join window")
        sem = asyncio.Semaphore(concurrency)

        async def one(start: datetime) -> Call:
            async with sem:
                sid = await self._book(start)
                return Call(
                    sid,
                    await self._join(base or self.base, self.host, sid),
                    await self._join(base or self.base, self.guest, sid),
                )

        return list(await asyncio.gather(*(one(s) for s in starts)))

    async def _book(self, start: datetime) -> str:
        body = {
            "kind": "family_call",
            "title": "bench",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=1)).isoformat(),
            "participant_ids": [self.guest.id],
            "max_participants": 2,
        }
        url = f"{self.base}/api/v1/sessions"
        async with self.http.post(url, json=body, headers=self.host.headers) as r:
            return str((await _json(r, 201))["items"][0]["id"])

    async def _join(self, base: str, who: User, session_id: str) -> str:
        url = f"{base}/api/v1/sessions/{session_id}/join"
        async with self.http.post(url, headers=who.headers) as r:
            return str((await _json(r, 200))["join_token"])


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


# sockets


def session(limit_per_host: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=limit_per_host, force_close=False)
    return aiohttp.ClientSession(connector=connector)


async def expect(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10.0) -> Any:
    """The next message of type ``kind``; others before it are skipped, errors raise."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket closed while waiting for {kind}: {msg!r}")
            data = json.loads(msg.data)
            if data.get("type") == kind:
                return data
            if data.get("type") == "error":
                raise RuntimeError(f"error while waiting for {kind}: {data}")


@dataclass(slots=True)
class Sock:
    ws: aiohttp.ClientWebSocketResponse
    peer_id: str


async def broker_socket(
    http: aiohttp.ClientSession, ws_url: str, token: str, join: bool = True
) -> Sock:
    """hello (join or access token) -> welcome, then join -> joined when ``join``."""
    ws = await http.ws_connect(ws_url, max_msg_size=WS_MAX, autoping=True, compress=COMPRESS)
    await ws.send_str(json.dumps({"type": "hello", "token": token}))
    welcome = await expect(ws, "welcome")
    if join:
        await ws.send_str('{"type":"join"}')
        await expect(ws, "joined")
    return Sock(ws, welcome["peer_id"])


async def bare_socket(http: aiohttp.ClientSession, ws_url: str, peer: str) -> Sock:
    ws = await http.ws_connect(ws_url, max_msg_size=WS_MAX, autoping=True, compress=COMPRESS)
    await ws.send_str(json.dumps({"type": "hello", "peer": peer}))
    await expect(ws, "welcome")
    return Sock(ws, peer)


Pair = tuple[Sock, Sock]


async def broker_pairs(
    http: aiohttp.ClientSession,
    calls: Sequence[Call],
    host_url: str,
    guest_url: str | None = None,
    concurrency: int = 16,
) -> list[Pair]:
    """Both members of every call in it (host on ``host_url``, guest on ``guest_url``)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(call: Call) -> Pair:
        async with sem:
            a = await broker_socket(http, host_url, call.host_token)
            b = await broker_socket(http, guest_url or host_url, call.guest_token)
            return a, b

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def bare_pairs(
    http: aiohttp.ClientSession, ws_url: str, count: int, tag: str, b_url: str | None = None
) -> list[Pair]:
    """``count`` pairs of bare-relay sockets (the second of each on ``b_url`` if given)."""

    async def one(i: int) -> Pair:
        a = await bare_socket(http, ws_url, f"{tag}-a{i}")
        b = await bare_socket(http, b_url or ws_url, f"{tag}-b{i}")
        return a, b

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def close_pairs(pairs: Sequence[Pair]) -> None:
    await asyncio.gather(*(s.ws.close() for p in pairs for s in p), return_exceptions=True)


# load


@dataclass
class Receipts:
    """What the receiving ends saw during one phase."""

    pattern: re.Pattern[str]
    expected: int
    got: list[tuple[int, int]] = field(default_factory=list)  # (counter, perf_counter_ns)
    errors: list[str] = field(default_factory=list)
    sample: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_text(self, text: str) -> None:
        m = self.pattern.search(text)
        if m is None:
            if '"type":"error"' in text:
                self.errors.append(text[:200])
            return
        self.got.append((int(m.group(1)), time.perf_counter_ns()))
        if self.sample is None:
            self.sample = text
        if len(self.got) >= self.expected:
            self.done.set()


@dataclass
class Sender:
    sock: Sock
    template: Template
    peer_id: str  # the addressee
    dead: bool = False  # its socket was closed (by the server): it sends no more


class Load:
    """Drives messages through pairs of sockets (both directions) and times them."""

    def __init__(self, pairs: Sequence[Pair], kind: str) -> None:
        self.kind = kind
        self.pairs = list(pairs)
        self.senders = [Sender(a, Template.of(kind, b.peer_id), b.peer_id) for a, b in pairs]
        self.senders += [Sender(b, Template.of(kind, a.peer_id), a.peer_id) for a, b in pairs]
        self.sent_ns: list[int] = []  # by counter; 0: not sent (its socket was closed)
        self.receipts = Receipts(COUNTERS[kind], 0)
        self.closed: list[int | None] = []  # close codes of sockets the server closed
        self._readers = [asyncio.create_task(self._read(s)) for s in self.senders]

    async def _read(self, sender: Sender) -> None:
        ws = sender.sock.ws
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.receipts.on_text(msg.data)
        sender.dead = True
        self.closed.append(ws.close_code)

    @property
    def sent(self) -> int:
        return sum(1 for t in self.sent_ns if t)

    def _phase(self, expected: int) -> Receipts:
        self.sent_ns = []
        self.receipts = Receipts(COUNTERS[self.kind], expected)
        return self.receipts

    async def _send(self, s: Sender, n: int) -> int:
        """Send message ``n`` from ``s``; its send time, or 0 if the socket is gone."""
        if s.dead:
            return 0
        t = time.perf_counter_ns()
        try:
            await s.sock.ws.send_str(s.template.frame(n))
        except (ConnectionError, aiohttp.ClientError):
            s.dead = True
            return 0
        return t

    async def paced(self, rate: float, seconds: float, drain: float = 5.0) -> Receipts:
        """Open loop: ``rate`` messages/s spread round-robin over all senders."""
        with _no_gc():
            return await self._paced(rate, seconds, drain)

    async def burst(self, per_sender: int, drain: float = 20.0) -> Receipts:
        """Every sender writes ``per_sender`` messages as fast as it can, all at once."""
        with _no_gc():
            return await self._burst(per_sender, drain)

    async def _paced(self, rate: float, seconds: float, drain: float) -> Receipts:
        total = int(rate * seconds)
        rx = self._phase(total)
        sent_ns = self.sent_ns
        senders = self.senders
        count = len(senders)
        start = time.perf_counter()
        n = 0
        while n < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while n < due:
                sent_ns.append(await self._send(senders[n % count], n))
                n += 1
            await asyncio.sleep(0.001)
        rx.expected = self.sent
        if len(rx.got) >= rx.expected:
            rx.done.set()
        await _wait(rx.done, drain)
        return rx

    async def _burst(self, per_sender: int, drain: float) -> Receipts:
        count = len(self.senders)
        rx = self._phase(per_sender * count)
        self.sent_ns = [0] * (per_sender * count)
        sent_ns = self.sent_ns

        async def send(i: int, s: Sender) -> None:
            for k in range(per_sender):
                n = k * count + i
                sent_ns[n] = await self._send(s, n)

        await asyncio.gather(*(send(i, s) for i, s in enumerate(self.senders)))
        rx.expected = self.sent
        if len(rx.got) >= rx.expected:
            rx.done.set()
        await _wait(rx.done, drain)
        return rx

    def latencies_ns(self) -> list[int]:
        sent = self.sent_ns
        return [t - sent[n] for n, t in self.receipts.got if n < len(sent) and sent[n]]

    def span_s(self) -> float:
        """First send to last receipt of the phase."""
        sent = [t for t in self.sent_ns if t]
        if not self.receipts.got or not sent:
            return float("nan")
        return (max(t for _, t in self.receipts.got) - min(sent)) / 1e9

    async def stop(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No client GC pauses inside a measured phase (they would look like server latency)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def check_sample(rx: Receipts, kind: str, bare: bool) -> str | None:
    """A problem with what arrived (None when it looks right): ``from`` stamped, no ``to``,
    and the payload forwarded verbatim."""
    if rx.sample is None:
        return "nothing arrived"
    data = json.loads(rx.sample)
    if "from" not in data or "to" in data:
        return f"bad envelope: {sorted(data)}"
    if not bare and "seq" not in data:
        return "no seq"
    found = rx.pattern.search(rx.sample)
    assert found is not None
    want = message(kind, "x", int(found.group(1)))
    if kind == "sdp":
        return None if data.get("sdp") == want["sdp"] else "sdp changed on the way"
    got, sent = data.get("candidate") or {}, want["candidate"]
    same = all(got.get(k) == sent[k] for k in ("candidate", "sdpMid", "sdpMLineIndex"))
    return None if same else "candidate changed on the way"
