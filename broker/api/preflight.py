"""Pre-call check routes: send your camera to the server for a few seconds, get a verdict.

``POST /api/v1/preflight`` takes an SDP offer (with its candidates: wait for ICE gathering to
complete) and answers it; ``GET /api/v1/preflight/{id}`` gives the result (``?wait=N`` waits
up to N seconds for it). The measuring peers live in ``PREFLIGHT``, set up by ``context``
(a ``cleanup_ctx``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from broker.api.context import SETTINGS
from broker.api.web import Query, Route, principal, read_body, respond
from broker.errors import InvalidInput, NotFound, Throttled
from broker.scheduling.model import PROFILES, Quality
from signaling.peer import IceServer
from signaling.preflight import BUSY, Check, Preflight, PreflightError
from signaling.protocol import MAX_SDP_BYTES

PREFLIGHT = web.AppKey("preflight", Preflight)
DEFAULT_MAX_RUNNING = 2
MAX_WAIT = 30.0


class PreflightIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    sdp: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SDP_BYTES)]
    type: Literal["offer"]
    quality: Literal["sd", "hd", "fullhd"] = "hd"


class PreflightStarted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: Literal["answer"]
    sdp: str
    seconds: float  # how long the measurement runs once video arrives
    result_url: str


class ProfileOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    width: int
    height: int
    frame_rate: int
    max_kbps: int


class MeasurementOut(msgspec.Struct, frozen=True, kw_only=True):
    frames: int
    width: int
    height: int
    fps: float
    kbps: float
    rtt_ms: float | None
    packets_lost: int
    loss: float
    seconds: float


class VerdictOut(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    problems: list[str]
    suggested: str | None


class PreflightOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: Literal["running", "done", "failed"]
    quality: str
    profile: ProfileOut
    measurement: MeasurementOut | None
    verdict: VerdictOut | None
    error: str | None

    @classmethod
    def of(cls, check: Check) -> PreflightOut:
        p = PROFILES[check.quality]
        m, v = check.measurement, check.verdict
        return cls(
            id=check.id,
            status=check.status,
            quality=check.quality.value,
            profile=ProfileOut(
                name=p.name.value,
                width=p.width,
                height=p.height,
                frame_rate=p.frame_rate,
                max_kbps=p.kbps_per_stream,
            ),
            measurement=None
            if m is None
            else MeasurementOut(
                frames=m.frames,
                width=m.width,
                height=m.height,
                fps=round(m.fps, 2),
                kbps=round(m.kbps, 1),
                rtt_ms=m.rtt_ms,
                packets_lost=m.packets_lost,
                loss=round(m.loss, 4),
                seconds=m.seconds,
            ),
            verdict=None
            if v is None
            else VerdictOut(
                ok=v.ok,
                problems=list(v.problems),
                suggested=None if v.suggested is None else v.suggested.value,
            ),
            error=check.error,
        )


async def context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx``: the preflight peers of this process, closed on shutdown."""
    settings = app[SETTINGS]
    stun = [IceServer(tuple(settings.stun_urls))] if settings.stun_urls else []
    runner = Preflight(
        max_running=getattr(settings, "preflight_max_running", DEFAULT_MAX_RUNNING),
        ice_servers=stun,
    )
    app[PREFLIGHT] = runner
    try:
        yield
    finally:
        await runner.close()


async def start(request: web.Request) -> web.Response:
    body = await read_body(request, PreflightIn)
    runner = request.app[PREFLIGHT]
    try:
        check, answer = await runner.start(
            principal(request).subject, body.sdp, Quality(body.quality)
        )
    except PreflightError as exc:
        if exc.code == BUSY:
            raise Throttled(exc.message, retry_after=int(runner.duration) + 1, code=BUSY) from None
        raise InvalidInput(exc.message, code=exc.code, field="sdp") from None
    url = f"/api/v1/preflight/{check.id}"
    return respond(
        PreflightStarted(
            id=check.id, type="answer", sdp=answer, seconds=runner.duration, result_url=url
        ),
        201,
    )


async def result(request: web.Request) -> web.Response:
    check = request.app[PREFLIGHT].get(principal(request).subject, request.match_info["id"])
    if check is None:
        raise NotFound("no such pre-call check")
    try:
        wait = min(MAX_WAIT, max(0.0, float(request.query.get("wait") or 0)))
    except ValueError:
        raise InvalidInput("wait must be a number of seconds", field="wait") from None
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(check.done.wait(), wait)
    return respond(PreflightOut.of(check))


ROUTES = (
    Route(
        "POST",
        "/api/v1/preflight",
        start,
        "Start a pre-call check: send an SDP offer with video (all candidates in it); the "
        "answer's peer measures resolution, frame rate, bitrate and round-trip time. "
        "At most a few run at once: 429 preflight_busy with Retry-After otherwise",
        "preflight",
        auth="user",
        body=PreflightIn,
        response=PreflightStarted,
        status=201,
        errors=(401, 422, 429),
    ),
    Route(
        "GET",
        "/api/v1/preflight/{id}",
        result,
        "The result of your pre-call check, with a verdict for the requested quality",
        "preflight",
        auth="user",
        response=PreflightOut,
        errors=(401, 404, 422),
        query=(Query("wait", "seconds to wait for the result (at most 30)"),),
    ),
)
