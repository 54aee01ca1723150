"""One WebRTC connection to one remote peer (aiortc): perfect negotiation, trickle ICE in.

Politeness: of two peers, the one with the **greater** peer id (plain string comparison) is
polite. Every client of the protocol must use the same rule.

aiortc cannot roll back a local offer (``setLocalDescription`` of type ``rollback`` is not
implemented), so glare is resolved like this:

- the impolite peer ignores an offer that collides with its own, and the remote candidates
  that come with it are kept until a remote description is there (they are harmless if they
  belong to the ignored offer);
- the polite peer replaces its ``RTCPeerConnection`` by a fresh one (same tracks, same data
  channel) and answers the remote offer with it. That is what a rollback achieves before the
  first connection; a colliding *renegotiation* restarts the media of that one peer.

Every step of one link (our offer, a remote offer, answer or candidate) runs in order on the
link's own task, so nothing else touches the connection in between. aiortc puts all its own
candidates into its SDP, so a link never sends ``candidate`` messages; it accepts trickled ones
(browsers) through ``aiortc.sdp.candidate_from_sdp`` and ``addIceCandidate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "data"
DATA_CHANNEL_ID = 0  # negotiated out of band: both sides create it with this id

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server, as the broker hands it out (``welcome.ice_servers``)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> IceServer:
        urls = data.get("urls", ())
        if isinstance(urls, str):
            urls = (urls,)
        username, credential = data.get("username"), data.get("credential")
        return cls(
            tuple(str(u) for u in urls),
            None if username is None else str(username),
            None if credential is None else str(credential),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """Something the client reports: a server message, or a media event of one peer link.

    ``type`` is the server message's type (``joined``, ``chat``, ``session-ended`` ...) with the
    message in ``data``, or one of the local types: ``track`` (``track`` set), ``channel-open``
    and ``channel-message`` (``channel`` set, the message in ``data["data"]``),
    ``connection-state`` (``data["state"]``), ``reconnected``, ``resume-failed``, ``closed``,
    and ``resending`` (the broker could not pass on one of our offers or answers, ``error``
    ``unavailable`` in ``data``: it is sent again after a pause; after the last try that error
    comes as ``error``).
    ``peer`` is the remote peer concerned, if any.
    """

    type: str
    peer: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    track: MediaStreamTrack | None = None
    channel: RTCDataChannel | None = None


Emit = Callable[[Event], None]


def rtc_configuration(servers: Sequence[IceServer], relay_only: bool = False) -> RTCConfiguration:
    """Always explicit: aiortc would otherwise use a public STUN server."""
    return RTCConfiguration(
        iceServers=[RTCIceServer(list(s.urls), s.username, s.credential) for s in servers],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
    )


def is_polite(local_id: str, remote_id: str) -> bool:
    return local_id > remote_id


def parse_candidate(wire: Mapping[str, Any] | None) -> RTCIceCandidate | None:
    """A relayed ``candidate`` (browser field names) -> aiortc; None: end of candidates."""
    if wire is None:
        return None
    line = str(wire.get("candidate") or "").strip()
    if not line:
        return None
    line = line.removeprefix("a=").removeprefix("candidate:")
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ValueError("not an ICE candidate line") from exc
    mid, index = wire.get("sdpMid"), wire.get("sdpMLineIndex")
    candidate.sdpMid = None if mid is None else str(mid)
    candidate.sdpMLineIndex = None if index is None else int(index)
    return candidate


class PeerLink:
    """The connection to one remote peer; see the module docstring for the rules."""

    def __init__(
        self,
        local_id: str,
        remote_id: str,
        *,
        configuration: RTCConfiguration,
        tracks: Callable[[], Sequence[MediaStreamTrack]],
        send: Send,
        emit: Emit,
        data_channel: bool = True,
    ) -> None:
        self.local_id = local_id
        self.remote_id = remote_id
        self.polite = is_polite(local_id, remote_id)
        self.replacements = 0  # fresh connections made instead of a rollback
        self.ignored_offers = 0
        self._configuration = configuration
        self._tracks = tracks
        self._send = send
        self._emit = emit
        self._data_channel = data_channel
        self._pending: list[RTCIceCandidate | None] = []  # before a remote description
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.channel: RTCDataChannel | None = None
        self.connected = asyncio.Event()
        self.pc = self._new_connection()
        self._task = asyncio.create_task(self._run(), name=f"peer-link-{remote_id}")

    # what the client calls (never blocks: the link's task does the work)
    def offer(self) -> None:
        self._inbox.put_nowait(("make-offer", None))

    def deliver(self, message: Mapping[str, Any]) -> None:
        """A relayed ``offer``, ``answer`` or ``candidate`` from the remote peer."""
        self._inbox.put_nowait((str(message["type"]), message))

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.pc.close()

    # the link's task
    async def _run(self) -> None:
        while True:
            kind, message = await self._inbox.get()
            try:
                if kind == "make-offer":
                    await self._make_offer()
                elif kind == "offer":
                    await self._on_offer(str(message["sdp"]))
                elif kind == "answer":
                    await self._on_answer(str(message["sdp"]))
                elif kind == "candidate":
                    await self._on_candidate(message.get("candidate"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "negotiation step failed",
                    extra={"peer_id": self.remote_id, "step": kind, "error": type(exc).__name__},
                )
                self._emit(Event("negotiation-error", self.remote_id, {"step": kind}))

    async def _make_offer(self) -> None:
        if self.pc.signalingState != "stable":
            return  # a negotiation is already under way
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send(
            {"type": "offer", "to": self.remote_id, "sdp": self.pc.localDescription.sdp}
        )

    async def _on_offer(self, sdp: str) -> None:
        if self.pc.signalingState != "stable":  # glare
            if not self.polite:
                self.ignored_offers += 1
                return
            await self._replace_connection()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self._flush_candidates()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._send(
            {"type": "answer", "to": self.remote_id, "sdp": self.pc.localDescription.sdp}
        )

    async def _on_answer(self, sdp: str) -> None:
        if self.pc.signalingState != "have-local-offer":
            return  # an answer to an offer we gave up (glare), or a duplicate
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._flush_candidates()

    async def _on_candidate(self, wire: Mapping[str, Any] | None) -> None:
        candidate = parse_candidate(wire)
        if self.pc.remoteDescription is None:
            self._pending.append(candidate)
            return
        await self._add_candidate(candidate)

    async def _flush_candidates(self) -> None:
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self._add_candidate(candidate)

    async def _add_candidate(self, candidate: RTCIceCandidate | None) -> None:
        try:
            await self.pc.addIceCandidate(candidate)
        except ValueError:  # after end-of-candidates (aiortc SDPs carry it): nothing to add
            log.debug("remote candidate not added", extra={"peer_id": self.remote_id})

    async def _replace_connection(self) -> None:
        old = self.pc
        self.replacements += 1
        self.connected.clear()
        self.pc = self._new_connection()
        await old.close()

    def _new_connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(configuration=self._configuration)
        for track in self._tracks():
            pc.addTrack(track)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if pc is self.pc:
                self._emit(Event("track", self.remote_id, {"kind": track.kind}, track=track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                self.connected.set()
            self._emit(Event("connection-state", self.remote_id, {"state": pc.connectionState}))

        if self._data_channel:
            self._open_channel(pc)
        return pc

    def _open_channel(self, pc: RTCPeerConnection) -> None:
        channel = pc.createDataChannel(
            DATA_CHANNEL_LABEL, negotiated=True, id=DATA_CHANNEL_ID, ordered=True
        )
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            if pc is self.pc:
                self._emit(Event("channel-open", self.remote_id, channel=channel))

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if pc is self.pc:
                self._emit(
                    Event("channel-message", self.remote_id, {"data": message}, channel=channel)
                )
