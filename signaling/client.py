"""The Python SDK: log in, join a session, talk the signaling protocol, run WebRTC on aiortc.

    client = await BrokerClient.login("http://127.0.0.1:8080", email, password, tracks=[cam])
    await client.join_session(session_id)          # REST join, socket, hello, join
    event = await client.wait_for("joined")        # or read ``client.events``
    ...
    await client.close()

The socket, and resuming it after a drop, is ``SignalingSocket`` (``signaling.sdk_socket``),
which ``BrokerClient`` builds on. Each remote peer gets a ``PeerLink`` (``signaling.peer``): one
``RTCPeerConnection`` with perfect negotiation. The peer that receives ``joined`` offers to
every peer listed there; the others wait for its offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay

from signaling import protocol
from signaling.peer import Event, IceServer, PeerLink, rtc_configuration
from signaling.resend import Resends, Retry
from signaling.sdk_socket import SignalingSocket
from signaling.sdk_wire import FINAL_MESSAGES, RELAYED, ClientError, JoinInfo, peer_of

__all__ = ["BrokerClient", "ClientError", "Event", "IceServer", "JoinInfo", "PeerLink"]

HISTORY = 1024  # events kept for ``wait_for``


class BrokerClient(SignalingSocket):
    """One participant: the REST calls it needs, the signaling socket (``SignalingSocket``),
    one link per peer.

    ``tracks`` are sent to every peer (through a ``MediaRelay``); the client stops them on
    ``close``. ``relay_only`` forces TURN. ``ice_servers`` replaces the broker's list and
    ``signaling_url`` the URL from the join answer (tests, fixed deployments).
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        *,
        tracks: Sequence[MediaStreamTrack] = (),
        relay_only: bool = False,
        ice_servers: Sequence[IceServer] | None = None,
        signaling_url: str | None = None,
        data_channel: bool = True,
        heartbeat: float = 20.0,
        reconnect_delays: Sequence[float] = (0.05, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        send_timeout: float = 15.0,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(
            heartbeat=heartbeat, reconnect_delays=reconnect_delays, send_timeout=send_timeout
        )
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.relay_only = relay_only
        self.links: dict[str, PeerLink] = {}
        self.events: asyncio.Queue[Event] = asyncio.Queue(HISTORY)
        self.role: str | None = None
        self.quality: Mapping[str, Any] = {}
        # peer id -> (microphone on, camera on), as each peer in the call last said (media)
        self.peer_media: dict[str, tuple[bool, bool]] = {}
        self._tracks = list(tracks)
        self._relay = MediaRelay()
        self._ice_override = None if ice_servers is None else tuple(ice_servers)
        self._url_override = signaling_url
        self._data_channel = data_channel
        self._http = http
        self._own_http = http is None
        self._want_join = False
        self._history: deque[tuple[int, Event]] = deque(maxlen=HISTORY)
        self._taken: set[int] = set()
        self._counter = itertools.count()
        self._arrived = asyncio.Event()
        self._resends = Resends()  # relayed messages, sent again when Redis was away
        self._resending: set[asyncio.Task[None]] = set()

    # REST
    @classmethod
    async def login(cls, base_url: str, email: str, password: str, **options: Any) -> BrokerClient:
        client = cls(base_url, **options)
        body = await client._rest(
            "POST", "/api/v1/auth/login", {"email": email, "password": password}
        )
        client.access_token = str(body["access_token"])
        return client

    async def join_session(self, session_id: str, *, join: bool = True) -> JoinInfo:
        """Get a join token over REST, open the socket, say hello and (by default) join."""
        info = JoinInfo.from_wire(await self._rest("POST", f"/api/v1/sessions/{session_id}/join"))
        await self.connect(info.join_token, info.signaling_url, info.ice_servers, join=join)
        return info

    async def _rest(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.access_token is not None:
            headers["Authorization"] = f"Bearer {self.access_token}"
        http = self._session()
        async with http.request(method, self.base_url + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise ClientError(str(data.get("code", resp.status)), str(data.get("detail", "")))
            return dict(data)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    # the socket (SignalingSocket) and its hooks
    async def connect(
        self,
        join_token: str,
        signaling_url: str,
        ice_servers: Iterable[IceServer] = (),
        *,
        join: bool = True,
    ) -> Mapping[str, Any]:
        """Open the signaling socket and say hello; returns the ``welcome``."""
        self._join_token = join_token
        self._url = self._url_override or signaling_url
        self._ice = tuple(ice_servers)
        welcome = await self._open(resume=False)
        self._reader = asyncio.create_task(self._read_loop(), name="broker-client-reader")
        if join:
            await self.join()
        return welcome

    async def _renew_join_token(self) -> bool:
        if not (self.access_token and self.session_id):
            return False
        with contextlib.suppress(ClientError, aiohttp.ClientError):
            path = f"/api/v1/sessions/{self.session_id}/join"
            self._join_token = str((await self._rest("POST", path))["join_token"])
        return True

    async def _came_back_new(self, welcome: Mapping[str, Any]) -> None:
        """Our place was gone (grace time over): new links, and join again."""
        await self._close_links()
        self._emit(Event("resume-failed", data=welcome))
        if self._want_join:
            await self._send({"type": "join"})

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type"))
        sender = peer_of(message)
        if kind in RELAYED and sender is not None:
            self._link(sender).deliver(message)
            return
        if kind == "error" and message.get("code") == protocol.UNAVAILABLE:
            retry = self._resends.refused(message.get("ref"))
            if retry is not None:  # an offer or answer Redis did not take: again, later
                task = asyncio.create_task(self._resend(retry), name="relay-resend")
                self._resending.add(task)
                task.add_done_callback(self._resending.discard)
                kind = "resending"
        if kind == "joined":
            self.role = str(message.get("role"))
            self.quality = dict(message.get("quality") or {})
            for peer in message.get("peers", ()):
                self._note_media(peer, str(peer["peer_id"]))
                self._link(str(peer["peer_id"])).offer()
        elif kind == "resume-token":  # a call taken on this idle connection: resume into it
            self._resume_token = str(message["resume_token"])
            self.session_id = str(message["session_id"])
        elif kind == "peer-joined" and sender is not None:
            self._note_media(message["peer"], sender)
            self._link(sender)
        elif kind == "peer-media" and sender is not None:
            self._note_media(message, sender)
        elif kind == "peer-left" and sender is not None:
            self.peer_media.pop(sender, None)
            link = self.links.pop(sender, None)
            if link is not None:
                await link.close()
        elif kind in FINAL_MESSAGES:
            self._finished = True
            await self._close_links()
        self._emit(Event(kind, sender, message))

    def _note_media(self, fields: Mapping[str, Any], peer_id: str) -> None:
        self.peer_media[peer_id] = (
            bool(fields.get("audio", True)),
            bool(fields.get("video", True)),
        )

    def _link(self, remote_id: str) -> PeerLink:
        link = self.links.get(remote_id)
        if link is None:
            assert self.peer_id is not None
            link = PeerLink(
                self.peer_id,
                remote_id,
                configuration=rtc_configuration(self.ice_servers, self.relay_only),
                tracks=self._fresh_tracks,
                send=self._send,
                emit=self._emit,
                data_channel=self._data_channel,
            )
            self.links[remote_id] = link
        return link

    @property
    def ice_servers(self) -> tuple[IceServer, ...]:
        return self._ice if self._ice_override is None else self._ice_override

    def _fresh_tracks(self) -> list[MediaStreamTrack]:
        return [self._relay.subscribe(t, buffered=False) for t in self._tracks]

    async def _close_links(self) -> None:
        links, self.links = list(self.links.values()), {}
        for link in links:
            await link.close()

    async def _resend(self, retry: Retry) -> None:
        await asyncio.sleep(retry.pause)
        if self._closing or self._finished:
            return
        try:
            await self._send(retry.message)
        except ClientError as exc:
            self._emit(Event("error", data={"code": exc.code, "ref": retry.message.get("id")}))

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one message (see ``SignalingSocket._send``). Relayed messages get an id, and
        are sent again if the broker could not pass them on."""
        if message.get("type") in RELAYED and "id" not in message:
            message = self._resends.stamp(message)
        await super()._send(message)

    # events
    def _emit(self, event: Event) -> None:
        self._history.append((next(self._counter), event))
        if self.events.full():
            self.events.get_nowait()  # nobody reads the queue: keep the newest
        self.events.put_nowait(event)
        self._arrived.set()

    async def wait_for(
        self,
        kind: str,
        peer: str | None = None,
        timeout: float = 10.0,
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """The oldest event of this type (and peer) not returned by ``wait_for`` before.

        Independent of ``events``: reading the queue does not hide events from this.
        """

        async def find() -> Event:
            while True:
                for n, event in self._history:
                    if (
                        n not in self._taken
                        and event.type == kind
                        and (peer is None or event.peer == peer)
                        and (where is None or where(event))
                    ):
                        self._taken.add(n)
                        return event
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    # participant and host actions
    async def join(self) -> None:
        self._want_join = True
        await self._send({"type": "join"})

    async def admit(self, peer_id: str) -> None:
        await self._send({"type": "admit", "peer": peer_id})

    async def deny(self, peer_id: str, reason: str | None = None) -> None:
        await self._send({"type": "deny", "peer": peer_id, "reason": reason})

    async def kick(self, peer_id: str, reason: str | None = None) -> None:
        await self._send({"type": "kick", "peer": peer_id, "reason": reason})

    async def end(self) -> None:
        await self._send({"type": "end"})

    async def chat(self, text: str) -> None:
        await self._send({"type": "chat", "text": text})

    async def media(self, *, audio: bool, video: bool) -> None:
        """Tell the others whether this peer's microphone and camera are on (they get
        ``peer-media``). It does not touch the tracks: stop or replace them as well."""
        await self._send({"type": "media", "audio": audio, "video": video})

    async def accept_call(self, session_id: str) -> None:
        """Answer an ``incoming-call`` (a connection opened with an access token)."""
        self._want_join = True
        await self._send({"type": "accept", "session_id": session_id})

    async def decline_call(self, session_id: str) -> None:
        await self._send({"type": "decline", "session_id": session_id})

    async def leave(self) -> None:
        """Leave the call for good (the server closes the socket), then ``close``."""
        if self._ready.is_set():
            self._finished = True
            with contextlib.suppress(ClientError, ConnectionError, RuntimeError):
                await self._send({"type": "leave"})
        await self.close()

    async def close(self) -> None:
        """Close every link and the socket (without leaving: the place is kept for a while)."""
        self._closing = True
        for task in list(self._resending):
            task.cancel()
        await self._close_links()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        for track in self._tracks:
            track.stop()
        if self._own_http and self._http is not None:
            await self._http.close()
