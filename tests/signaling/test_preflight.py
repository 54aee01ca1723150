"""Pre-call checks: a real aiortc camera against the broker's measuring peer, over REST."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from broker.scheduling.model import Quality
from signaling.preflight import Measurement, judge
from tests.support.app import Account, expect_problem, signed_up
from tests.support.webrtc import PatternTrack

pytestmark = pytest.mark.usefixtures("loopback_ice")


async def camera_offer(width: int = 1280, height: int = 720) -> RTCPeerConnection:
    """A peer sending an HD test camera, its offer made (aiortc puts every candidate in it)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PatternTrack(width, height))
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def start(client: TestClient[Any, Any], who: Account, pc: RTCPeerConnection) -> Any:
    resp = await client.post(
        "/api/v1/preflight",
        json={"sdp": pc.localDescription.sdp, "type": "offer", "quality": "hd"},
        headers=who.headers,
    )
    return resp


async def started(client: TestClient[Any, Any], who: Account, pc: RTCPeerConnection) -> str:
    """Start a check and apply the answer; returns the check's id."""
    resp = await start(client, who, pc)
    body = await resp.json()
    assert resp.status == 201, body
    assert body["type"] == "answer" and body["result_url"] == f"/api/v1/preflight/{body['id']}"
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
    return str(body["id"])


async def result(client: TestClient[Any, Any], who: Account, check_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/preflight/{check_id}?wait=20", headers=who.headers)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def test_hd_camera_gets_a_report_and_a_verdict(client: TestClient[Any, Any]) -> None:
    patient = await signed_up(client, "patient")
    pc = await camera_offer()
    try:
        check_id = await started(client, patient, pc)
        report = await result(client, patient, check_id)
    finally:
        await pc.close()
    assert report["status"] == "done", report
    m, verdict = report["measurement"], report["verdict"]
    assert (m["width"], m["height"]) == (1280, 720)
    assert m["fps"] > 10 and m["frames"] > 10
    assert m["kbps"] > 0 and 1.5 <= m["seconds"] <= 4
    assert m["rtt_ms"] is not None and 0 <= m["rtt_ms"] < 1000
    assert report["quality"] == "hd" and report["profile"]["width"] == 1280
    assert verdict["ok"] == (not verdict["problems"])
    assert verdict["ok"] == (m["fps"] >= 24 and m["loss"] <= 0.05), report
    if verdict["ok"]:
        assert verdict["suggested"] == "hd"  # 720p cannot hold full HD


async def test_only_a_few_run_at_once_and_results_are_private(
    client: TestClient[Any, Any],
) -> None:
    first, second, third = [await signed_up(client, "patient") for _ in range(3)]
    peers = [await camera_offer(640, 360) for _ in range(3)]
    try:
        ids = [await started(client, first, peers[0]), await started(client, second, peers[1])]
        busy = await expect_problem(await start(client, third, peers[2]), 429, "preflight_busy")
        assert "try again" in busy["detail"]
        resp = await client.get(f"/api/v1/preflight/{ids[0]}", headers=third.headers)
        await expect_problem(resp, 404, "not_found")
        reports = await asyncio.gather(
            result(client, first, ids[0]), result(client, second, ids[1])
        )
        for report in reports:
            assert report["status"] == "done", report
            assert not report["verdict"]["ok"]  # 640x360 is not HD
            assert any("resolution 640x360" in p for p in report["verdict"]["problems"])
            assert report["verdict"]["suggested"] in ("sd", None)
        third_id = await started(client, third, peers[2])  # a slot is free again
        assert (await result(client, third, third_id))["status"] == "done"
    finally:
        for pc in peers:
            await pc.close()


async def test_offers_without_video_are_refused(client: TestClient[Any, Any]) -> None:
    patient = await signed_up(client, "patient")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("only-data")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        await expect_problem(await start(client, patient, pc), 422, "no_video")
    finally:
        await pc.close()
    resp = await client.post(
        "/api/v1/preflight",
        json={"sdp": "v=0\r\nnot sdp\r\n", "type": "offer"},
        headers=patient.headers,
    )
    await expect_problem(resp, 422, "invalid_offer")
    resp = await client.post("/api/v1/preflight", json={"sdp": "v=0", "type": "offer"})
    await expect_problem(resp, 401, "unauthenticated")


def measured(width: int, height: int, fps: float, loss: float = 0.0) -> Measurement:
    return Measurement(60, width, height, fps, 900.0, 12.0, 0, loss, 2.0)


@pytest.mark.parametrize(
    ("m", "ok", "suggested"),
    [
        (measured(1280, 720, 30), True, Quality.HD),
        (measured(1920, 1080, 30), True, Quality.FULLHD),
        (measured(640, 360, 30), False, Quality.SD),
        (measured(1280, 720, 12), False, None),
        (measured(1280, 720, 30, loss=0.2), False, None),
    ],
)
def test_verdict(m: Measurement, ok: bool, suggested: Quality | None) -> None:
    verdict = judge(m, Quality.HD)
    assert verdict.ok is ok and verdict.suggested is suggested
    assert bool(verdict.problems) is not ok
