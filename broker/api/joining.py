"""Joining a session: join tokens, guest invites and their redemption, the join audit."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from broker.api import session_schemas as s
from broker.api.context import SETTINGS, services
from broker.api.sessions import SESSION_PATH
from broker.api.web import Route, no_content, principal, read_body, respond
from broker.domain import utcnow
from broker.scheduling.joining import JoinGrant
from broker.scheduling.model import ParticipantRole
from broker.turn import ice_servers


def join_out(request: web.Request, grant: JoinGrant) -> s.JoinOut:
    settings = request.app[SETTINGS]
    base = settings.public_url or f"{request.scheme}://{request.host}"
    ws = base.rstrip("/").replace("http", "ws", 1) + "/ws"
    ice = [s.IceServer(**server) for server in ice_servers(settings, grant.subject, utcnow())]
    return s.JoinOut.of(grant, ws, ice)


async def join(request: web.Request) -> web.Response:
    grant = await services(request).joining.join(
        principal(request), request.match_info["session_id"]
    )
    return respond(join_out(request, grant))


async def redeem(request: web.Request) -> web.Response:
    body = await read_body(request, s.Redeem)
    grant = await services(request).joining.redeem(body.token)
    return respond(join_out(request, grant))


async def create_invite(request: web.Request) -> web.Response:
    body = await read_body(request, s.InviteCreate)
    issued = await services(request).joining.create_invite(
        principal(request),
        request.match_info["session_id"],
        ParticipantRole(body.role),
        body.display_name,
        timedelta(seconds=body.expires_in) if body.expires_in else None,
        body.max_uses,
    )
    url = f"{request.app[SETTINGS].base_url}/join#invite={issued.token}"
    return respond(
        s.InviteCreated(invite=s.InviteOut.of(issued.invite), token=issued.token, url=url), 201
    )


async def list_invites(request: web.Request) -> web.Response:
    found = await services(request).joining.list_invites(
        principal(request), request.match_info["session_id"]
    )
    return respond(s.InviteList(items=[s.InviteOut.of(i) for i in found]))


async def revoke_invite(request: web.Request) -> web.Response:
    await services(request).joining.revoke_invite(
        principal(request), request.match_info["session_id"], request.match_info["invite_id"]
    )
    return no_content()


async def audit(request: web.Request) -> web.Response:
    entries = await services(request).joining.audit(
        principal(request), request.match_info["session_id"]
    )
    return respond(s.AuditList(items=[s.AuditOut.of(a) for a in entries]))


ROUTES = (
    Route(
        "POST",
        SESSION_PATH + "/join",
        join,
        "Get a join token, the signaling URL and ICE servers (inside the join window)",
        "joining",
        auth="user",
        response=s.JoinOut,
        errors=(401, 404, 409),
    ),
    Route(
        "POST",
        SESSION_PATH + "/invites",
        create_invite,
        "Invite a guest (interpreter, family member): an expiring, limited-use link",
        "joining",
        auth="user_or_key",
        body=s.InviteCreate,
        response=s.InviteCreated,
        status=201,
        errors=(401, 403, 404, 409, 422),
    ),
    Route(
        "GET",
        SESSION_PATH + "/invites",
        list_invites,
        "The session's invites (hosts)",
        "joining",
        auth="user_or_key",
        response=s.InviteList,
        errors=(401, 403, 404),
    ),
    Route(
        "DELETE",
        SESSION_PATH + "/invites/{invite_id}",
        revoke_invite,
        "Revoke an invite",
        "joining",
        auth="user_or_key",
        status=204,
        errors=(401, 403, 404),
    ),
    Route(
        "POST",
        "/api/v1/invites/redeem",
        redeem,
        "A guest trades an invite link's token for a join token",
        "joining",
        body=s.Redeem,
        response=s.JoinOut,
        errors=(404, 409, 422),
    ),
    Route(
        "GET",
        SESSION_PATH + "/audit",
        audit,
        "Who joined, was admitted, left, and when (ids only)",
        "sessions",
        auth="user_or_key",
        response=s.AuditList,
        errors=(401, 403, 404),
    ),
)
