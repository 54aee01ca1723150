"""Pre-call check: a server-side aiortc peer receives the client's camera for a few seconds.

The client sends an SDP offer with its video (all candidates in it: wait for ICE gathering to
complete, as WHIP clients do); the server answers, measures what arrives and keeps a result:
resolution, frame rate, bitrate, packet loss and round-trip time, with a verdict on whether
the requested quality profile (``PROFILES``) will hold. The server also sends a tiny probe
track back (160x120 at 5 fps): the receiver reports on it (RTCP) give the round-trip time.

At most ``max_running`` checks run at once (each decodes HD video); more get ``BUSY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from broker.scheduling.model import PROFILES, QUALITY_ORDER, Quality, QualityProfile
from signaling import protocol
from signaling.peer import IceServer, rtc_configuration

log = logging.getLogger(__name__)

# Error codes (stable).
BUSY = "preflight_busy"
INVALID_OFFER = "invalid_offer"
NO_VIDEO = "no_video"
NO_CONNECTION = "no_connection"
NO_FRAMES = "no_frames"

MIN_FPS_SHARE = 0.8  # of the profile's frame rate
MAX_LOSS = 0.05
MAX_RTT = 0.4  # seconds
PROBE_SIZE = (160, 120)
PROBE_FPS = 5
KEEP_RESULTS = 256

Status = Literal["running", "done", "failed"]


class PreflightError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Measurement:
    frames: int
    width: int
    height: int
    fps: float
    kbps: float
    rtt_ms: float | None
    packets_lost: int
    loss: float  # share of packets lost
    seconds: float


@dataclass(frozen=True, slots=True)
class Verdict:
    quality: Quality
    ok: bool
    problems: tuple[str, ...]
    suggested: Quality | None  # the best profile the measurement supports


def shortfalls(m: Measurement, p: QualityProfile) -> list[str]:
    """Why ``m`` does not support profile ``p`` (empty: it does). Pure."""
    out = []
    if m.width < p.width or m.height < p.height:
        out.append(f"resolution {m.width}x{m.height} is below {p.width}x{p.height}")
    if m.fps < MIN_FPS_SHARE * p.frame_rate:
        out.append(f"frame rate {m.fps:.1f} is below {MIN_FPS_SHARE * p.frame_rate:.0f}")
    if m.loss > MAX_LOSS:
        out.append(f"{m.loss:.0%} of packets were lost at {m.kbps:.0f} kbps")
    if m.rtt_ms is not None and m.rtt_ms > MAX_RTT * 1000:
        out.append(f"round-trip time {m.rtt_ms:.0f} ms is above {MAX_RTT * 1000:.0f} ms")
    return out


def judge(m: Measurement, quality: Quality) -> Verdict:
    """The verdict for the requested profile, and the best one that would hold. Pure.

    The bitrate is reported, not judged: a still picture needs little, and senders ramp up
    over seconds. Loss at the rate that was sent is what shows a path is too narrow.
    """
    problems = tuple(shortfalls(m, PROFILES[quality]))
    suggested = next((q for q in QUALITY_ORDER if not shortfalls(m, PROFILES[q])), None)
    return Verdict(quality, not problems, problems, suggested)


@dataclass(slots=True)
class Check:
    """One pre-call check and, when it is over, its result."""

    id: str
    owner: str
    quality: Quality
    started: float = field(default_factory=time.monotonic)
    status: Status = "running"
    measurement: Measurement | None = None
    verdict: Verdict | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ProbeTrack(MediaStreamTrack):
    """Small black frames at a low rate: the way back, for receiver reports (RTT)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0
        width, height = PROBE_SIZE
        self._planes = (bytes([16]) * width * height, bytes([128]) * (width * height // 4))

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        step = 90000 // PROBE_FPS
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += step
            await asyncio.sleep(max(0.0, self._start + self._pts / 90000 - time.monotonic()))
        frame = VideoFrame(*PROBE_SIZE, "yuv420p")
        y, uv = self._planes
        for plane, data in zip(frame.planes, (y, uv, uv), strict=True):
            plane.update(data)
        frame.pts = self._pts
        frame.time_base = Fraction(1, 90000)
        return frame


class Preflight:
    """Runs pre-call checks, at most ``max_running`` at once, and keeps results a while."""

    def __init__(
        self,
        max_running: int = 2,
        duration: float = 2.0,
        connect_timeout: float = 10.0,
        rtt_grace: float = 2.5,
        keep_seconds: float = 600.0,
        ice_servers: Sequence[IceServer] = (),
    ) -> None:
        self.max_running = max_running
        self.duration = duration
        self.connect_timeout = connect_timeout
        self.rtt_grace = rtt_grace
        self.keep_seconds = keep_seconds
        self._ice = tuple(ice_servers)
        self._slots = asyncio.Semaphore(max_running)
        self._checks: dict[str, Check] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, owner: str, offer_sdp: str, quality: Quality) -> tuple[Check, str]:
        """Answer the offer and start measuring; returns the check and the answer's SDP."""
        if self._slots.locked():
            raise PreflightError(
                BUSY, f"{self.max_running} pre-call checks are running; try again in a moment"
            )
        await self._slots.acquire()
        pc = RTCPeerConnection(rtc_configuration(self._ice))
        probe = ProbeTrack()
        try:
            track = await self._answer(pc, offer_sdp, probe)
        except BaseException:
            self._slots.release()
            probe.stop()
            await pc.close()
            raise
        self._prune()
        check = Check(secrets.token_urlsafe(12), owner, quality)
        self._checks[check.id] = check
        task = asyncio.create_task(self._run(check, pc, track, probe), name="preflight")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return check, pc.localDescription.sdp

    def get(self, owner: str, check_id: str) -> Check | None:
        check = self._checks.get(check_id)
        return check if check is not None and check.owner == owner else None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _answer(
        self, pc: RTCPeerConnection, offer_sdp: str, probe: ProbeTrack
    ) -> MediaStreamTrack:
        try:
            protocol.check_sdp(offer_sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise PreflightError(INVALID_OFFER, "the offer could not be applied") from exc
        video = [
            t
            for t in pc.getTransceivers()
            if t.kind == "video" and t.receiver.track is not None and t.direction != "inactive"
        ]
        if not video:
            raise PreflightError(NO_VIDEO, "the offer sends no video")
        pc.addTrack(probe)
        await pc.setLocalDescription(await pc.createAnswer())
        track: MediaStreamTrack = video[0].receiver.track
        return track

    async def _run(
        self, check: Check, pc: RTCPeerConnection, track: MediaStreamTrack, probe: ProbeTrack
    ) -> None:
        try:
            check.measurement = await self._measure(pc, track)
            check.verdict = judge(check.measurement, check.quality)
            check.status = "done"
        except PreflightError as exc:
            check.status, check.error = "failed", exc.code
        except MediaStreamError:
            check.status, check.error = "failed", NO_FRAMES
        except Exception:
            log.exception("pre-call check failed", extra={"check_id": check.id})
            check.status, check.error = "failed", "internal"
        finally:
            probe.stop()
            with contextlib.suppress(Exception):
                await pc.close()
            self._slots.release()
            check.done.set()
            log.info(
                "pre-call check finished",
                extra={"check_id": check.id, "status": check.status, "error": check.error},
            )

    async def _measure(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> Measurement:
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(track.recv(), self.connect_timeout)
        except TimeoutError:
            code = NO_FRAMES if pc.connectionState == "connected" else NO_CONNECTION
            raise PreflightError(code, "no video arrived") from None
        bytes0, t0 = await _bytes_received(pc), loop.time()
        sizes = [_size(first)]
        times = [_time(first, t0)]
        while (left := t0 + self.duration - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(track.recv(), left + 0.5)
            except TimeoutError:
                break
            sizes.append(_size(frame))
            times.append(_time(frame, loop.time()))
        seconds = loop.time() - t0
        bytes1 = await _bytes_received(pc)
        rtt = await self._rtt(pc)
        lost, received = await _loss(pc)
        span = times[-1] - times[0]
        width, height = min(w for w, _ in sizes), min(h for _, h in sizes)  # held throughout
        return Measurement(
            frames=len(sizes),
            width=width,
            height=height,
            fps=(len(times) - 1) / span if span > 0 else 0.0,
            kbps=(bytes1 - bytes0) * 8 / 1000 / seconds if seconds > 0 else 0.0,
            rtt_ms=None if rtt is None else round(rtt * 1000, 1),
            packets_lost=lost,
            loss=lost / (lost + received) if lost + received else 0.0,
            seconds=round(seconds, 3),
        )

    async def _rtt(self, pc: RTCPeerConnection) -> float | None:
        """From the receiver reports on the probe track; waits up to ``rtt_grace`` for one."""
        deadline = time.monotonic() + self.rtt_grace
        while True:
            for sender in pc.getSenders():
                for s in (await sender.getStats()).values():
                    if s.type != "remote-inbound-rtp":
                        continue
                    rtt = getattr(s, "roundTripTime", None)
                    if rtt is not None:
                        return float(rtt)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.keep_seconds
        for key, check in list(self._checks.items()):
            if check.status != "running" and check.started < cutoff:
                del self._checks[key]
        finished = [k for k, c in self._checks.items() if c.status != "running"]
        for key in finished[: max(0, len(self._checks) - KEEP_RESULTS + 1)]:
            del self._checks[key]


def _size(frame: Any) -> tuple[int, int]:
    return int(frame.width), int(frame.height)


def _time(frame: Any, fallback: float) -> float:
    """The sender's capture time (RTP timestamp) when known: frame rate as sent."""
    at = getattr(frame, "time", None)
    return float(at) if at is not None else fallback


async def _bytes_received(pc: RTCPeerConnection) -> int:
    report = await pc.getStats()
    return max((int(s.bytesReceived) for s in report.values() if s.type == "transport"), default=0)


async def _loss(pc: RTCPeerConnection) -> tuple[int, int]:
    lost = received = 0
    for s in (await pc.getStats()).values():
        if s.type == "inbound-rtp" and getattr(s, "kind", "") == "video":
            lost += max(0, int(s.packetsLost))
            received += int(s.packetsReceived)
    return lost, received
