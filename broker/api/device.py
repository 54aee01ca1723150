"""TV pairing endpoints (RFC 8628): device code, token polling, and approval from a phone."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from broker.api import schemas as s
from broker.api.auth import token_response
from broker.api.context import SETTINGS, services
from broker.api.web import Query, Route, no_content, principal, read_body, respond
from broker.errors import InvalidInput


async def device_code(request: web.Request) -> web.Response:
    body = (
        await read_body(request, s.DeviceCodeRequest)
        if request.can_read_body
        else s.DeviceCodeRequest()
    )
    auth = await services(request).device.start(body.client_id)
    verify = request.app[SETTINGS].base_url + "/pair"
    return respond(
        s.DeviceCodeResponse(
            device_code=auth.device_code,
            user_code=auth.user_code,
            verification_uri=verify,
            verification_uri_complete=f"{verify}?code={quote(auth.user_code)}",
            expires_in=auth.expires_in,
            interval=auth.interval,
        )
    )


async def device_token(request: web.Request) -> web.Response:
    body = await read_body(request, s.DeviceTokenRequest)
    pair = await services(request).device.poll(body.device_code)
    return respond(token_response(pair))


async def describe_pairing(request: web.Request) -> web.Response:
    code = request.query.get("user_code", "")
    if not code or len(code) > 32:
        raise InvalidInput("user_code query parameter is required", field="user_code")
    pending = await services(request).device.describe(code)
    return respond(
        s.PendingPairingOut(
            user_code=pending.user_code, client_id=pending.client_id, expires_in=pending.expires_in
        )
    )


async def decide_pairing(request: web.Request) -> web.Response:
    body = await read_body(request, s.DeviceDecision)
    await services(request).device.decide(principal(request), body.user_code, body.approve)
    return no_content()


ROUTES = (
    Route(
        "POST",
        "/api/v1/device/code",
        device_code,
        "Start pairing a TV: get a device code and a user code to show",
        "device",
        body=s.DeviceCodeRequest,
        response=s.DeviceCodeResponse,
        errors=(409, 422),
        form_body=True,
    ),
    Route(
        "POST",
        "/api/v1/device/token",
        device_token,
        "Poll for the TV's tokens (authorization_pending, slow_down, expired_token, "
        "access_denied as in RFC 8628)",
        "device",
        body=s.DeviceTokenRequest,
        response=s.TokenResponse,
        errors=(400, 422),
        form_body=True,
    ),
    Route(
        "GET",
        "/api/v1/device/pairing",
        describe_pairing,
        "Look up a pending pairing by the code shown on the TV",
        "device",
        auth="user",
        response=s.PendingPairingOut,
        errors=(401, 404, 422),
        query=(Query("user_code", "the code shown on the TV, e.g. BCDF-GHJK", required=True),),
    ),
    Route(
        "POST",
        "/api/v1/device/pairing",
        decide_pairing,
        "Approve or deny a TV pairing from your logged-in phone",
        "device",
        auth="user",
        body=s.DeviceDecision,
        status=204,
        errors=(401, 403, 404, 409, 422),
    ),
)
