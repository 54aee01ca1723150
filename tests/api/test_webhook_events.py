"""A clinic system subscribes over REST and receives signed events as sessions change."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from broker.domain import Role
from broker.webhooks import verify
from tests.support.app import signed_up, staff_account


async def test_booking_and_cancelling_reach_the_clinic_system_in_order(client: Any) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        if len(received) >= 2:
            arrived.set()
        return web.Response(status=204)

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", receive)
    receiver = TestServer(receiver_app)
    await receiver.start_server()
    try:
        admin = await staff_account(client)
        doc = await staff_account(client, admin.clinic_id, Role.CLINICIAN)
        patient = await signed_up(client, "patient")
        made = await client.post(
            f"/api/v1/clinics/{admin.clinic_id}/webhooks",
            json={"url": str(receiver.make_url("/hook"))},
            headers=admin.headers,
        )
        assert made.status == 201, await made.text()
        secret = (await made.json())["secret"]

        start = datetime.now(UTC) + timedelta(hours=2)
        resp = await client.post(
            "/api/v1/sessions",
            json={
                "kind": "checkup",
                "title": "Secret diagnosis review",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=20)).isoformat(),
                "clinician_id": doc.user_id,
                "patient_id": patient.user_id,
                "notes": "very private",
            },
            headers=admin.headers,
        )
        session_id = (await resp.json())["items"][0]["id"]
        await client.post(
            f"/api/v1/sessions/{session_id}/cancel",
            json={"reason": "clinician_ill"},
            headers=admin.headers,
        )
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await receiver.close()

    events = []
    for headers, body in received:
        assert verify(secret, headers, body, time.time())
        assert b"Secret diagnosis" not in body and b"very private" not in body
        assert patient.email.encode() not in body
        events.append(json.loads(body))
    assert [(e["type"], e["session_id"]) for e in events] == [
        ("session.created", session_id),
        ("session.cancelled", session_id),
    ]
    assert events[1]["data"]["reason"] == "clinician_ill"
    assert len({e["id"] for e in events}) == 2
